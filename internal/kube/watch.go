package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// NodeChange is one event of a watch on a Node.
type NodeChange struct {
	Type            string // ADDED, MODIFIED, DELETED or BOOKMARK
	Facts           NodeFacts
	ResourceVersion string
}

// ErrGone is 410: a watch's resourceVersion is too old to resume from.
var ErrGone = errors.New("gone")

// WatchNode watches one Node and calls fn for each event until the server
// ends the watch (after timeout), ctx ends, or fn fails. From
// resourceVersion "" it starts with the Node's current state (an ADDED
// event, none if there is no such Node); otherwise it resumes after that
// version. A watch that ends cleanly returns nil.
func (c *Client) WatchNode(ctx context.Context, name, resourceVersion string, timeout time.Duration, fn func(NodeChange) error) error {
	q := url.Values{}
	q.Set("fieldSelector", "metadata.name="+name)
	q.Set("watch", "true")
	q.Set("allowWatchBookmarks", "true")
	q.Set("timeoutSeconds", strconv.Itoa(int(timeout.Seconds())))
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	path := "/api/v1/nodes?" + q.Encode()
	ctx, cancel := context.WithTimeout(ctx, timeout+c.timeout)
	defer cancel()
	req, err := c.request(ctx, "GET", path, "", http.NoBody)
	if err != nil {
		return err
	}
	c.count("WATCH")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("failed to watch node %q: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiError(resp.StatusCode, "WATCH", path, data)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) { // the server ended the watch
				return nil
			}
			return fmt.Errorf("failed to read the watch of node %q: %w", name, err)
		}
		if ev.Type == "ERROR" {
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(ev.Object, &st)
			return &APIError{Code: st.Code, Verb: "WATCH", Path: path, Message: st.Message}
		}
		var n node
		if err := json.Unmarshal(ev.Object, &n); err != nil {
			return fmt.Errorf("failed to decode a watch event of node %q: %w", name, err)
		}
		if err := fn(NodeChange{Type: ev.Type, Facts: n.facts(), ResourceVersion: n.Metadata.ResourceVersion}); err != nil {
			return err
		}
	}
}
