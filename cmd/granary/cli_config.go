package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// profile is what `granary login` (and `granary signup --save`) keep:
// $XDG_CONFIG_HOME/granary/profile.json, else ~/.config/granary/profile.json,
// mode 0600 in a 0700 folder. Its tokens are sent only to its API.
type profile struct {
	API        string `json:"api"`
	Token      string `json:"token,omitempty"`
	AdminToken string `json:"admin_token,omitempty"`
}

// endpoint is where a command sends its calls, with which token.
type endpoint struct {
	API, Token string
}

// profilePath is where the profile lives.
func profilePath() (string, error) {
	if dir := os.Getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "granary", "profile.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no place for the profile: %w", err)
	}
	return filepath.Join(home, ".config", "granary", "profile.json"), nil
}

// loadProfile reads the profile; a missing one is empty.
func loadProfile() (profile, error) {
	var p profile
	path, err := profilePath()
	if err != nil {
		return p, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("profile %s: %w", path, err)
	}
	p.API = normalAPI(p.API)
	return p, nil
}

// saveProfile writes p whole (a temporary file renamed over the old one),
// readable by its owner only, and returns its path.
func saveProfile(p profile) (string, error) {
	path, err := profilePath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	f, err := os.CreateTemp(filepath.Dir(path), ".profile-*.json")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	// CreateTemp makes the file 0600 already; say so anyway, before the
	// secret is written.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(f.Name(), path)
}

// devClusterFiles are where a running `granary dev` describes itself:
// $GRANARY_DEV_DIR/cluster.json first, then ./.dev/cluster.json.
func devClusterFiles() []string {
	var out []string
	if dir := os.Getenv("GRANARY_DEV_DIR"); dir != "" {
		out = append(out, filepath.Join(dir, "cluster.json"))
	}
	return append(out, filepath.Join(".dev", "cluster.json"))
}

// loadDevCluster reads the first cluster.json that exists; nil when none.
func loadDevCluster() (*clusterInfo, error) {
	for _, path := range devClusterFiles() {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var in clusterInfo
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		in.API = normalAPI(in.API)
		return &in, nil
	}
	return nil, nil
}

// findEndpoint resolves the API and token of a command from the flags, the
// environment, the profile and cluster.json.
func findEndpoint(flagAPI, flagToken string, admin bool) (endpoint, error) {
	prof, err := loadProfile()
	if err != nil {
		return endpoint{}, err
	}
	dev, err := loadDevCluster()
	if err != nil {
		return endpoint{}, err
	}
	ep := resolveEndpoint(flagAPI, flagToken, admin, os.Getenv, prof, dev)
	if ep.API == "" {
		return ep, usagef("no API address: pass --api, set GRANARY_API, run 'granary login --api URL --token T', or start 'granary dev'")
	}
	return ep, nil
}

// resolveEndpoint picks each of API and token from the first source that
// has it: flag, environment (GRANARY_API, GRANARY_TOKEN), profile,
// cluster.json. A file's token is taken only when the API chosen is that
// file's, so no token is ever sent to a server it was not made for. For an
// admin command the files' admin tokens count, for a tenant command their
// tenant tokens (cluster.json's demo tenant). A token the user gave (flag or
// environment) never goes to the API of a cluster.json, which is found by
// the folder the command runs in: a checkout could ship one that names
// someone else's server.
func resolveEndpoint(flagAPI, flagToken string, admin bool, getenv func(string) string, prof profile, dev *clusterInfo) endpoint {
	var ep endpoint
	for _, api := range []string{flagAPI, getenv("GRANARY_API"), prof.API} {
		if api != "" {
			ep.API = normalAPI(api)
			break
		}
	}
	userToken := flagToken != "" || getenv("GRANARY_TOKEN") != ""
	if ep.API == "" && dev != nil && !userToken {
		ep.API = dev.API
	}
	ep.Token = flagToken
	if ep.Token == "" {
		ep.Token = getenv("GRANARY_TOKEN")
	}
	if ep.Token == "" && prof.API != "" && prof.API == ep.API {
		ep.Token = prof.Token
		if admin {
			ep.Token = prof.AdminToken
		}
	}
	if ep.Token == "" && dev != nil && dev.API == ep.API {
		ep.Token = dev.Demo.Token
		if admin {
			ep.Token = dev.AdminToken
		}
	}
	return ep
}

// normalAPI is an API address as a base URL: a scheme (http:// when none
// is given) and no trailing slash.
func normalAPI(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return strings.TrimRight(s, "/")
}
