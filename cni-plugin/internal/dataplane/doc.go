// Package dataplane applies, checks and removes a pod's network (a
// plan.Plan) in the kernel: Calico's point-to-point veth model with the host
// end in the namespace the plugin runs in. It is the only package that uses
// netlink, network namespaces and /proc/sys.
//
// Namespace switches act on one OS thread; callers lock the main thread in
// init() and all container-side work runs inside ns.WithNetNSPath closures.
package dataplane
