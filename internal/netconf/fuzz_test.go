package netconf

import (
	"strings"
	"testing"
	"time"
)

// FuzzLoad: any input gives a config or an error, never a panic, and a
// loaded config satisfies the validation rules.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(calicoConf))
	f.Add([]byte(`{"name":"n","ipam":{"type":"host-local","routes":[{"dst":"0.0.0.0/0"}]},"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/32"}]},"cniVersion":"1.0.0"}`))
	f.Add([]byte(`{"name":"n","ipam":{"type":"x"},"num_queues":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		env := testEnv(map[string]string{}, map[string]string{DefaultMTUFile: "1400"})
		c, err := Load(data, env)
		if err != nil {
			return
		}
		if c.IPAM.Type == "" || c.NumQueues < 1 || c.MTU < 0 || c.Datastore(env) != DatastoreKubernetes {
			t.Fatalf("invalid config accepted: %+v", c)
		}
		_, _ = c.EffectiveMTU(env)
		_, _ = c.ResolveNodename(env)
		_ = c.APIAccess(env, time.Second)
		if c, err := LoadForIPAM(data, env); err == nil {
			_, _ = c.ValidAttachments()
		}
	})
}

// FuzzParseIdentity: CNI_ARGS parsing never panics, and an identity it
// accepts has both pod keys.
func FuzzParseIdentity(f *testing.F) {
	f.Add("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=u")
	f.Add("IgnoreUnknown=1;K8S_POD_NAME=p")
	f.Add("=;;a==b;K8S_POD_NAMESPACE=")
	f.Fuzz(func(t *testing.T, args string) {
		id, err := ParseIdentity(args)
		if err == nil && (id.Namespace == "" || id.Pod == "") {
			t.Fatalf("identity without pod accepted: %+v", id)
		}
		if got := WithIgnoreUnknown(args); !strings.Contains(strings.ToLower(got), "ignoreunknown=") {
			t.Fatalf("WithIgnoreUnknown(%q) = %q", args, got)
		}
	})
}
