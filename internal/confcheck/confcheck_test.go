package confcheck

import (
	"strings"
	"testing"
)

var env = Env()

func TestShippedTemplateRendered(t *testing.T) {
	list := `{"name":"k8s-pod-network","cniVersion":"1.1.0","plugins":[{"type":"calico","log_level":"info",
	"log_file_path":"/var/log/calico/cni/cni.log","datastore_type":"kubernetes","nodename":"n1","mtu":1500,
	"ipam":{"type":"host-local","subnet":"usePodCidr"},"policy":{"type":"k8s"},
	"kubernetes":{"kubeconfig":"/etc/cni/net.d/calico-kubeconfig"},"capabilities":{"io.kubernetes.cri.pod-annotations":true}},
	{"type":"portmap","snat":true,"capabilities":{"portMappings":true}}]}`
	r, err := Conflist([]byte(list), env)
	if err != nil || len(r.Warnings) != 0 || !r.IPAM.Families().V4 || r.Conf.Nodename != "n1" {
		t.Fatalf("%v %+v", err, r)
	}
}

func TestProblems(t *testing.T) {
	wrap := func(plugin string) string {
		return `{"name":"net","cniVersion":"1.0.0","plugins":[` + plugin + `]}`
	}
	for name, tc := range map[string]struct{ list, want string }{
		"not JSON":          {`{"name":`, "parse"},
		"no calico":         {wrap(`{"type":"bridge"}`), `no plugin of type "calico"`},
		"mtu a string":      {wrap(`{"type":"calico","mtu":"1500","ipam":{"type":"host-local"}}`), "mtu"},
		"no ipam":           {wrap(`{"type":"calico"}`), "ipam.type is required"},
		"etcd":              {wrap(`{"type":"calico","datastore_type":"etcdv3","ipam":{"type":"host-local"}}`), "etcdv3"},
		"bad log_format":    {wrap(`{"type":"calico","log_format":"xml","ipam":{"type":"host-local"}}`), "log_format"},
		"ranges not a list": {wrap(`{"type":"calico","ipam":{"type":"host-local","ranges":"usePodCidr"}}`), "ipam.ranges"},
		// Each of these fails every command, DEL included.
		"name starts with -":  {strings.Replace(wrap(`{"type":"calico","ipam":{"type":"host-local"}}`), `"net"`, `"-pods"`, 1), "invalid network name"},
		"name starts with _":  {strings.Replace(wrap(`{"type":"calico","ipam":{"type":"host-local"}}`), `"net"`, `"_x"`, 1), "invalid network name"},
		"name ..":             {strings.Replace(wrap(`{"type":"calico","ipam":{"type":"host-local"}}`), `"net"`, `".."`, 1), "invalid network name"},
		"name too long":       {strings.Replace(wrap(`{"type":"calico","ipam":{"type":"host-local"}}`), `"net"`, `"`+strings.Repeat("n", 200)+`"`, 1), "at most"},
		"cniVersion 9.9.9":    {strings.Replace(wrap(`{"type":"calico","ipam":{"type":"host-local"}}`), `"1.0.0"`, `"9.9.9"`, 1), "unsupported cniVersion"},
		"cniVersion empty":    {strings.Replace(wrap(`{"type":"calico","ipam":{"type":"host-local"}}`), `"1.0.0"`, `""`, 1), "unsupported cniVersion"},
		"mtu 50":              {wrap(`{"type":"calico","mtu":50,"ipam":{"type":"host-local"}}`), "invalid mtu 50"},
		"route dst":           {wrap(`{"type":"calico","ipam":{"type":"host-local","routes":[{"dst":"10.0.0.0/33"}]}}`), "ipam.routes[0]"},
		"static subnet":       {wrap(`{"type":"calico","ipam":{"type":"host-local","subnet":"10.0.0.300/24"}}`), "not a CIDR"},
		"static range subnet": {wrap(`{"type":"calico","ipam":{"type":"host-local","ranges":[[{"subnet":"nonsense"}]]}}`), "not a CIDR"},
		"api root":            {wrap(`{"type":"calico","kubernetes":{"k8s_api_root":"::nope"},"ipam":{"type":"host-local"}}`), "k8s_api_root"},
		"relative log file":   {wrap(`{"type":"calico","log_file_path":"cni.log","ipam":{"type":"host-local"}}`), "log_file_path"},
	} {
		_, err := Conflist([]byte(tc.list), env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %q", name, err, tc.want)
		}
	}
	r, err := Conflist([]byte(wrap(`{"type":"calico","log_levl":"debug","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`)), env)
	if err != nil || len(r.Warnings) != 2 || !strings.Contains(strings.Join(r.Warnings, "|"), `"log_levl"`) {
		t.Errorf("warnings: %v %v", err, r)
	}
}
