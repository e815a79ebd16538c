// Package render produces install-cni's files from templates: the conflist
// (Calico's __PLACEHOLDER__ tokens) and the CNI kubeconfig. Pure.
package render

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kdd-cni/kdd-cni/install/internal/config"
)

var placeholder = regexp.MustCompile(`__[A-Z][A-Z0-9_]*__`)

// Values are what the conflist placeholders stand for.
func Values(c *config.Config, server string) map[string]string {
	host, port := c.ServiceHost, c.ServicePort
	if host == "" && server != "" {
		if h, p, ok := hostPort(server); ok {
			host, port = h, p
		}
	}
	return map[string]string{
		"__LOG_LEVEL__":               c.LogLevel,
		"__LOG_FILE_PATH__":           c.LogFilePath,
		"__LOG_FILE_MAX_SIZE__":       strconv.Itoa(c.LogMaxSize),
		"__LOG_FILE_MAX_AGE__":        strconv.Itoa(c.LogMaxAge),
		"__LOG_FILE_MAX_COUNT__":      strconv.Itoa(c.LogMaxCount),
		"__DATASTORE_TYPE__":          c.DatastoreType,
		"__KUBERNETES_NODE_NAME__":    c.NodeName,
		"__KUBECONFIG_FILEPATH__":     c.KubeconfigHostPath(),
		"__KUBECONFIG_FILENAME__":     config.KubeconfigName,
		"__CNI_MTU__":                 strconv.Itoa(c.MTU),
		"__KUBERNETES_SERVICE_HOST__": host,
		"__KUBERNETES_SERVICE_PORT__": port,
		"__CALICO_API_GROUP__":        "crd.projectcalico.org/v1",
		"__REQUIRE_MTU_FILE__":        "false",
		"__ETCD_ENDPOINTS__":          "",
		"__ETCD_DISCOVERY_SRV__":      "",
		"__ETCD_CERT_FILE__":          "",
		"__ETCD_KEY_FILE__":           "",
		"__ETCD_CA_CERT_FILE__":       "",
		"__SERVICEACCOUNT_TOKEN__":    "", // filled per token by Conflist
	}
}

func hostPort(server string) (string, string, bool) {
	rest := server
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	rest, _, _ = strings.Cut(rest, "/")
	i := strings.LastIndexByte(rest, ':')
	if i < 0 || strings.HasSuffix(rest, "]") {
		return strings.Trim(rest, "[]"), "443", rest != ""
	}
	return strings.Trim(rest[:i], "[]"), rest[i+1:], true
}

// WithVersion sets the conflist's cniVersion (empty: unchanged).
func WithVersion(conflist []byte, version string) ([]byte, error) {
	if version == "" {
		return conflist, nil
	}
	dec := json.NewDecoder(bytes.NewReader(conflist))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, errors.New("failed to set the conflist's cniVersion: not a JSON object")
	}
	m["cniVersion"] = version
	return json.MarshalIndent(m, "", "  ")
}

// Conflist replaces every placeholder and validates the JSON. Values are
// substituted as JSON string contents (quotes, backslashes and control
// characters escaped), so a value can never add keys or end the document:
// in a bare position (`"mtu": __CNI_MTU__`) anything but a number or a
// literal makes the result invalid JSON and the render fails. An unknown
// placeholder is an error, never left in the file.
func Conflist(template string, values map[string]string, token string) ([]byte, error) {
	var unknown []string
	out := placeholder.ReplaceAllStringFunc(template, func(p string) string {
		if p == "__SERVICEACCOUNT_TOKEN__" {
			return jsonEscape(token)
		}
		v, ok := values[p]
		if !ok {
			unknown = append(unknown, p)
		}
		return jsonEscape(v)
	})
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("failed to render the conflist: unknown placeholders %s", strings.Join(unknown, ", "))
	}
	var v struct {
		Name    string            `json:"name"`
		Plugins []json.RawMessage `json:"plugins"`
		Type    string            `json:"type"`
	}
	// The error never quotes the contents: they may hold a token.
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, errors.New("failed to render the conflist: the result is not valid JSON (check CNI_NETWORK_CONFIG)")
	}
	if v.Name == "" || (len(v.Plugins) == 0 && v.Type == "") {
		return nil, errors.New("failed to render the conflist: it needs a name and plugins (or a type)")
	}
	return []byte(out), nil
}

// jsonEscape is s as the contents of a JSON string.
func jsonEscape(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b[1 : len(b)-1])
}

// Kubeconfig is the CNI plugin's kubeconfig: one cluster, one token user.
func Kubeconfig(server string, caPEM []byte, insecure bool, token string) []byte {
	var cluster string
	switch {
	case insecure:
		cluster = "    insecure-skip-tls-verify: true\n"
	case len(caPEM) > 0:
		cluster = "    certificate-authority-data: \"" + base64.StdEncoding.EncodeToString(caPEM) + "\"\n"
	}
	return []byte("# Written by kdd-cni install-cni; refreshed before the token expires.\n" +
		"apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n" +
		"    server: " + strconv.Quote(server) + "\n" + cluster +
		"users:\n- name: kdd-cni\n  user:\n    token: " + strconv.Quote(token) + "\n" +
		"contexts:\n- name: kdd-cni-context\n  context:\n    cluster: local\n    user: kdd-cni\n" +
		"current-context: kdd-cni-context\n")
}

// The CNI spec versions install-cni writes: 1.1.0 where the runtime takes
// 1.1.0 results, else 1.0.0, never older.
const (
	CNIVersionLatest = "1.1.0"
	CNIVersionCompat = "1.0.0"
)

// runtimeVersion parses a Node's containerRuntimeVersion,
// "<runtime>://<major>.<minor>[.…]" (e.g. "containerd://1.6.20~ds1").
var runtimeVersion = regexp.MustCompile(`^([a-z0-9-]+)://v?(\d+)\.(\d+)`)

// minimum1_1 is, per runtime, the first version whose CNI library takes
// 1.1.0 results (containernetworking/cni ≥ v1.2.0): containerd 2.0 and
// CRI-O 1.31. Older ones reject them ("unsupported CNI result version").
var minimum1_1 = map[string][2]int{"containerd": {2, 0}, "cri-o": {1, 31}}

// CNIVersionFor is the conflist cniVersion for a node's runtime: 1.1.0 for
// runtimes known to accept it, 1.0.0 for every other (or an unknown or
// unreported one).
func CNIVersionFor(containerRuntimeVersion string) string {
	m := runtimeVersion.FindStringSubmatch(containerRuntimeVersion)
	if m == nil {
		return CNIVersionCompat
	}
	min, known := minimum1_1[m[1]]
	major, _ := strconv.Atoi(m[2])
	minor, _ := strconv.Atoi(m[3])
	if known && (major > min[0] || major == min[0] && minor >= min[1]) {
		return CNIVersionLatest
	}
	return CNIVersionCompat
}
