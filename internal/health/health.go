// Package health tells whether a node can serve pods, one reason at a time:
// the checks behind CNI STATUS (both plugins) and `kddctl status`. Each
// check gives a finding of its own, so an operator reads every reason, not
// only the first. Findings that fail block ADD (STATUS fails, the runtime
// stops asking for new pods' networks); DEL is never blocked by them.
package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// Severity of a finding.
type Severity int

const (
	OK Severity = iota
	Warn
	Fail
)

func (s Severity) String() string {
	return [...]string{"OK", "WARN", "FAIL"}[s]
}

// Finding is one check's outcome.
type Finding struct {
	Check    string // datastore, identity, token, podCIDR, ipam, capacity, journal
	Severity Severity
	Message  string
}

// Limits.
const (
	// TokenMargin: a token this close to its expiry fails the check. The
	// sidecar refreshes it with a quarter of its life left (at least 6 h
	// for the default 24 h TTL), so a token this close means refreshes
	// have been failing for hours.
	TokenMargin = 10 * time.Minute
	// JournalLimit is the backlog of annotation clears past which the
	// node is reported unhealthy: the datastore has refused them for a
	// while and Felix still sees the deleted pods' endpoints.
	JournalLimit = 100
)

// Node is what the checks look at.
type Node struct {
	API    *kube.Client // nil when the credentials did not load (APIErr)
	APIErr error
	// Node is the Node whose podCIDRs the configuration uses ("" when it
	// could not be resolved: NodeErr).
	Node    string
	NodeErr error
	// Families are the podCIDR families the IPAM configuration names.
	Families podcidr.Families
	// HostLocal is the IPAM configuration when it is host-local over the
	// podCIDRs (to count its leases); nil otherwise.
	HostLocal []byte
	Journal   nodestate.Journal
	// StateDir holds the podCIDRs install-cni's sidecar publishes.
	StateDir string
	// VerifiedFile, when set (CNI STATUS), keeps the API server's last good
	// answer for VerifiedFor; unset (kddctl status), every check asks.
	VerifiedFile string
	Now          time.Time
}

// Check runs every check. It sends one request, a GET of the Node, unless
// an answer under VerifiedFile is younger than VerifiedFor.
func Check(ctx context.Context, n Node) []Finding {
	if n.Now.IsZero() {
		n.Now = time.Now()
	}
	var out []Finding
	add := func(check string, sev Severity, format string, a ...any) {
		out = append(out, Finding{Check: check, Severity: sev, Message: fmt.Sprintf(format, a...)})
	}
	if n.API == nil {
		add("datastore", Fail, "datastore unusable: %v", n.APIErr)
	} else {
		checkToken(n, add)
	}
	if n.NodeErr != nil {
		add("node", Fail, "node name unknown: %v", n.NodeErr)
	}
	if n.API != nil && n.NodeErr == nil {
		if facts, age, ok := lastVerified(n); ok {
			add("datastore", OK, "%s answered %s ago (STATUS asks it at most every %s)", n.API.Server(), age.Round(time.Second), VerifiedFor)
			checkPodCIDRs(n, facts, add)
		} else if facts, err := n.API.NodeFacts(ctx, n.Node); err != nil {
			checkRequest(n, err, add)
		} else {
			add("datastore", OK, "%s answers", n.API.Server())
			checkPodCIDRs(n, facts, add)
			rememberVerified(n, facts)
		}
	}
	checkJournal(n, add)
	if len(Failed(out)) > 0 {
		forgetVerified(n)
	}
	return out
}

type adder func(check string, sev Severity, format string, a ...any)

func checkToken(n Node, add adder) {
	tok := n.API.BearerToken()
	if tok == "" {
		return // client certificate or exec plugin: nothing to read
	}
	exp, ok := kube.TokenExpiry(tok)
	switch left := exp.Sub(n.Now); {
	case !ok:
		add("token", OK, "token has no expiry")
	case left <= 0:
		add("token", Fail, "token expired at %s (%s ago): is install-cni's sidecar running and able to mint tokens?",
			exp.UTC().Format(time.RFC3339), (-left).Round(time.Second))
	case left < TokenMargin:
		add("token", Fail, "token expires in %s, at %s: install-cni's sidecar has not refreshed it (is it running?)",
			left.Round(time.Second), exp.UTC().Format(time.RFC3339))
	default:
		add("token", OK, "token valid until %s", exp.UTC().Format(time.RFC3339))
	}
}

func checkRequest(n Node, err error, add adder) {
	switch {
	case errors.Is(err, kube.ErrUnauthorized):
		add("identity", Fail, "identity not accepted by %s (401): the token is expired, revoked or its Node re-created", n.API.Server())
	case errors.Is(err, kube.ErrForbidden):
		add("identity", Fail, "identity forbidden to read node %q (403): check the CNI service account's RBAC (kddctl check)", n.Node)
	case errors.Is(err, kube.ErrNotFound):
		add("node", Fail, "node %q not found: is the nodename right?", n.Node)
	default:
		add("datastore", Fail, "datastore unreachable: %v", err)
	}
}

func checkPodCIDRs(n Node, facts kube.NodeFacts, add adder) {
	if !n.Families.Any() {
		return
	}
	cidrs, err := podcidr.ByFamily(n.Node, facts.PodCIDRs)
	if err == nil {
		err = n.Families.Check(n.Node, cidrs)
	}
	if err != nil {
		add("podCIDR", Fail, "%v", err)
		return
	}
	add("podCIDR", OK, "node %q has podCIDRs %s", n.Node, strings.Join(facts.PodCIDRs, ","))
	switch w, ok := nodestate.WatchedPodCIDRs(n.StateDir, n.Node); {
	case !ok:
		add("podCIDR", OK, "install-cni's sidecar does not publish them (no live watch): each ADD reads the Node")
	case w.UID != facts.UID || w.CIDRs != cidrs:
		add("podCIDR", Warn, "install-cni's sidecar publishes %s for Node %s, the API server has %s for Node %s",
			w.CIDRs, w.UID, cidrs, facts.UID)
	default:
		add("podCIDR", OK, "install-cni's sidecar publishes them from its watch on the Node: ADDs read no Node")
	}
	inUse := map[string]int{}
	if n.HostLocal != nil {
		v4, v6, err := ipamexec.InUse(n.HostLocal)
		if err != nil {
			add("ipam", Warn, "cannot count leases: %v", err)
		}
		inUse["IPv4"], inUse["IPv6"] = v4, v6
	}
	for _, f := range []struct {
		name, cidr string
		on         bool
	}{{"IPv4", cidrs.V4, n.Families.V4}, {"IPv6", cidrs.V6, n.Families.V6}} {
		if !f.on {
			continue
		}
		usable, err := podcidr.Usable(f.cidr)
		if err != nil {
			continue
		}
		if n.HostLocal != nil {
			if used := uint64(inUse[f.name]); used >= usable {
				add("ipam", Fail, "IP pool exhausted: %d of %d usable %s addresses of %s in use", used, usable, f.name, f.cidr)
			} else {
				add("ipam", OK, "%d of %d usable %s addresses of %s in use", used, usable, f.name, f.cidr)
			}
		}
		if facts.MaxPods > 0 && uint64(facts.MaxPods) > usable {
			add("capacity", Warn, "the kubelet's maxPods (%d) exceeds the %d usable %s addresses of podCIDR %s: pods past that fail to start",
				facts.MaxPods, usable, f.name, f.cidr)
		}
	}
}

func checkJournal(n Node, add adder) {
	if n.Journal == "" {
		return
	}
	pending, err := n.Journal.Pending()
	switch {
	case err != nil:
		add("journal", Warn, "cannot read the journal: %v", err)
	case len(pending) > JournalLimit:
		add("journal", Fail, "%d annotation clears pending (limit %d), oldest from %s: the datastore keeps refusing them",
			len(pending), JournalLimit, pending[0].Recorded.UTC().Format(time.RFC3339))
	case len(pending) > 0:
		add("journal", OK, "%d annotation clears pending", len(pending))
	}
}

// Failed are the findings that fail.
func Failed(fs []Finding) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Severity == Fail {
			out = append(out, f)
		}
	}
	return out
}

// Summary joins findings' messages, each prefixed with its check.
func Summary(fs []Finding) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Check + ": " + f.Message
	}
	return strings.Join(parts, "; ")
}
