package tenantapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
)

// writeJSON answers v with status. Encoding our own view types cannot fail,
// and a write error means the client left, so neither is reported.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // answers are never embedded in HTML; keep <token> readable
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal error; try again later"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// decodeJSON reads exactly one JSON value into v, strictly: the body must be
// at most limit bytes (errTooLarge), its Content-Type empty or
// application/json (errMediaType), every field known to v and nothing but
// white space after the value (errBadRequest).
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(errMediaType, "content type %q is not supported: send application/json", ct)
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, limit)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			if e := decodeError(err, limit); statusFor(e) == http.StatusRequestEntityTooLarge {
				return e
			}
		}
		return errorf(errBadRequest, "the body must hold one JSON object and nothing after it")
	}
	return nil
}

// decodeError turns a json decoding failure into a message a client can act on.
func decodeError(err error, limit int64) error {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return errorf(errTooLarge, "request body is larger than %d bytes", limit)
	case errors.Is(err, io.EOF):
		return errorf(errBadRequest, "the body is empty: send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(errBadRequest, "malformed JSON: the body ends too early")
	case errors.As(err, &syntax):
		return errorf(errBadRequest, "malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		if typ.Field != "" {
			return errorf(errBadRequest, "field %q must be a %s, not a JSON %s", typ.Field, typ.Type, typ.Value)
		}
		return errorf(errBadRequest, "the body must be a JSON object, not a JSON %s", typ.Value)
	default:
		// DisallowUnknownFields reports `json: unknown field "x"`; it has no
		// error type of its own, and everything else left here is bad input too.
		return errorf(errBadRequest, "bad JSON body: %s", err.Error())
	}
}
