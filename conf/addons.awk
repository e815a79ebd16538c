# Adds the addon manager's label to every top-level object of a manifest:
# EnsureExists for ConfigMaps (operators edit them), Reconcile otherwise.
# Used by `make manifests` to generate conf/addons/ from conf/manifests/.
function mode() { return kind == "ConfigMap" ? "EnsureExists" : "Reconcile" }
function flush() {
	if (pending) { print "  labels:"; print "    addonmanager.kubernetes.io/mode: " mode() }
	pending = 0
}
/^---/ { flush(); inmeta = 0; kind = "" }
/^kind:/ { kind = $2 }
inmeta && /^[^ #]/ { flush(); inmeta = 0 }
{ print }
/^metadata:/ { inmeta = 1; pending = 1 }
inmeta && /^  labels:/ { print "    addonmanager.kubernetes.io/mode: " mode(); pending = 0 }
END { flush() }
