package kube

import (
	"context"
	"errors"
	"io"
	"time"
)

// errAborted ends a pending request whose body will never come.
var errAborted = errors.New("request aborted before its body was sent")

// Pending is a write sent before its body is known. Opening it starts the
// connection, the TLS handshake and the API server's authentication,
// authorization and admission to the handler while the caller still works
// out what to write; the server then waits for the body. A request whose
// body never comes (Abort, or the caller's context ending) changes nothing:
// the server reads an incomplete body and fails it.
type Pending struct {
	c          *Client
	verb, path string
	ctype      string
	body       *io.PipeWriter
	done       chan error
	cancel     context.CancelFunc
	used       bool
}

// Open starts a write of contentType to path and returns at once; its
// timeout starts when the body is sent. ctx bounds it as a whole.
func (c *Client) Open(ctx context.Context, verb, path, contentType string) *Pending {
	ctx, cancel := context.WithCancel(ctx)
	r, w := io.Pipe()
	p := &Pending{c: c, verb: verb, path: path, ctype: contentType, body: w, done: make(chan error, 1), cancel: cancel}
	req, err := c.request(ctx, verb, path, contentType, r)
	if err != nil {
		p.done <- err
		return p
	}
	go func() {
		err := c.roundTrip(req, verb, path, nil)
		r.CloseWithError(errAborted) // unblocks a Send the transport gave up on
		p.done <- err
	}()
	return p
}

// Send writes the body and waits for the answer. When the request ended
// before its body could be sent without an answer from the server (no
// connection, say), nothing was applied and the write is sent again, once,
// as a plain request.
func (p *Pending) Send(ctx context.Context, body []byte) error {
	if p.used {
		return errors.New("failed to send a request: its body was sent already")
	}
	p.used = true
	defer p.cancel()
	select {
	case err := <-p.done: // ended before the body was written
		return p.retry(ctx, body, err)
	default:
	}
	timer := time.AfterFunc(p.c.timeout, p.cancel)
	defer timer.Stop()
	_, werr := p.body.Write(body)
	if werr == nil {
		werr = p.body.Close()
	}
	err := <-p.done
	if werr != nil && err != nil {
		return p.retry(ctx, body, err)
	}
	return err
}

// retry sends a write whose pending request ended unsent: an answer from
// the server (401, 403, ...) stands; no answer means nothing was applied.
func (p *Pending) retry(ctx context.Context, body []byte, err error) error {
	var api *APIError
	if err == nil || errors.As(err, &api) || ctx.Err() != nil {
		return err
	}
	return p.c.do(ctx, p.verb, p.path, p.ctype, body, nil)
}

// Abort cancels a request whose body was not sent; the server changes
// nothing. Safe to call at any time; it does nothing once Send was called.
func (p *Pending) Abort() {
	if p.used {
		return
	}
	p.used = true
	p.body.CloseWithError(errAborted)
	p.cancel()
}
