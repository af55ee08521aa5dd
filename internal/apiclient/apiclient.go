// Package apiclient is the small JSON client of Granary's REST API that
// `granary dev`, the `granary` CLI and the benchmark drivers use.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxBody bounds how much of an answer is read.
const maxBody = 1 << 20

// Error is a non-2xx answer of the API.
type Error struct {
	Method, URL string
	// Status is the HTTP status code.
	Status int
	// StatusText is the status line's text, e.g. "404 Not Found".
	StatusText string
	// Message is the API's {"error": "…"} text, or the raw body when the
	// answer is not such an object.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.URL, e.StatusText, e.Message)
}

// Client calls one API server with one token.
type Client struct {
	// Base is the server's URL without the path, e.g. http://127.0.0.1:8080.
	Base string
	// Token is sent as a bearer token when not empty.
	Token string
	// HTTP sends the requests; http.DefaultClient when nil.
	HTTP *http.Client
}

// Call sends body (JSON-encoded, if not nil) to Base+path and decodes a 2xx
// answer into out (if not nil; a *json.RawMessage receives the answer as
// sent). Any other status is an *Error.
func (c *Client) Call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	var size int64
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd, size = bytes.NewReader(b), int64(len(b))
	}
	return c.Send(ctx, method, path, "application/json", rd, size, out)
}

// Send is Call with a body of any content type, streamed from body (size
// bytes; -1 when unknown), e.g. a file.
func (c *Client) Send(ctx context.Context, method, path, contentType string, body io.Reader, size int64, out any) error {
	url := strings.TrimRight(c.Base, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.ContentLength = size
	}
	req.Header.Set("Content-Type", contentType)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Method: method, URL: url, Status: resp.StatusCode, StatusText: resp.Status, Message: string(bytes.TrimSpace(b))}
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &body) == nil && body.Error != "" {
			e.Message = body.Error
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", method, url, err)
		}
	}
	return nil
}

// Download GETs Base+path and copies a 2xx answer's body into w as it
// arrives (no size bound: the caller's ctx bounds it), returning the
// answer's headers. Any other status is an *Error. A file can take longer
// than HTTP's timeout, so a Client whose HTTP has a Timeout should pass a
// copy without it.
func (c *Client) Download(ctx context.Context, path string, w io.Writer) (http.Header, error) {
	url := strings.TrimRight(c.Base, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		e := &Error{Method: http.MethodGet, URL: url, Status: resp.StatusCode, StatusText: resp.Status, Message: string(bytes.TrimSpace(b))}
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &body) == nil && body.Error != "" {
			e.Message = body.Error
		}
		return nil, e
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: read the file: %w", url, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return nil, fmt.Errorf("GET %s: got %d bytes of %d", url, n, resp.ContentLength)
	}
	return resp.Header, nil
}

// Call sends body (JSON-encoded, if not nil) with the bearer token (if not
// empty) and decodes a 2xx answer into out (if not nil). Any other status is
// an *Error carrying the method, URL, status and the API's error text.
func Call(ctx context.Context, method, url, token string, body, out any) error {
	c := Client{Token: token}
	return c.Call(ctx, method, url, body, out)
}
