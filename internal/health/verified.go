package health

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/boottime"
	"github.com/kdd-cni/kdd-cni/internal/kube"
)

// VerifiedFor is how long CNI STATUS reuses the API server's last good
// answer. containerd 2.x asks STATUS on every kubelet runtime-status poll
// (every 5 s): without reuse that is a GET of the Node, on a new TLS
// connection, every 5 s from every node. With it, a node asks at most twice
// a minute, and a revoked identity turns the node NotReady within
// VerifiedFor plus the kubelet's poll, inside the controller-manager's
// node-monitor grace period (50 s). A failed check is never reused: a
// broken node is re-checked on every STATUS and seen ready again as soon
// as it is. kddctl status always asks.
const VerifiedFor = 30 * time.Second

// verified is the API server's last good answer for a node, as kept in
// Node.VerifiedFile.
type verified struct {
	// Key names the server, the credentials and the Node the answer was
	// for (a digest: the file never holds the token).
	Key string `json:"key"`
	// At is CLOCK_BOOTTIME when it was received: a wall-clock step neither
	// extends nor ends it, and a reboot ends it.
	At    time.Duration  `json:"at"`
	Facts kube.NodeFacts `json:"facts"`
}

// verifiedKey names what an answer is valid for: a new token (re-minted),
// another server or another Node needs a new answer.
func verifiedKey(n Node) string {
	h := sha256.New()
	for _, s := range []string{n.API.Server(), n.API.BearerToken(), n.Node} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// lastVerified is the kept answer if it is for n and younger than
// VerifiedFor, and its age.
func lastVerified(n Node) (kube.NodeFacts, time.Duration, bool) {
	if n.VerifiedFile == "" {
		return kube.NodeFacts{}, 0, false
	}
	b, err := os.ReadFile(n.VerifiedFile)
	if err != nil {
		return kube.NodeFacts{}, 0, false
	}
	var v verified
	now, err := boottime.Now()
	if err != nil || json.Unmarshal(b, &v) != nil || v.Key != verifiedKey(n) {
		return kube.NodeFacts{}, 0, false
	}
	if age := now - v.At; age >= 0 && age < VerifiedFor {
		return v.Facts, age, true
	}
	return kube.NodeFacts{}, 0, false
}

// rememberVerified keeps a good answer; a failed write only costs the next
// STATUS a request.
func rememberVerified(n Node, facts kube.NodeFacts) {
	if n.VerifiedFile == "" {
		return
	}
	now, err := boottime.Now()
	if err != nil {
		return
	}
	b, err := json.Marshal(verified{Key: verifiedKey(n), At: now, Facts: facts})
	if err != nil {
		return
	}
	if os.MkdirAll(filepath.Dir(n.VerifiedFile), 0o700) == nil {
		_ = atomicfile.Write(n.VerifiedFile, b, 0o600)
	}
}

// forgetVerified drops the kept answer once a check fails, so no later
// STATUS reuses an answer older than the failure.
func forgetVerified(n Node) {
	if n.VerifiedFile != "" {
		_ = os.Remove(n.VerifiedFile)
	}
}
