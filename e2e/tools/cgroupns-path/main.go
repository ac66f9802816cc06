// Command cgroupns-path gives a running container of a node's containerd a
// cgroup namespace with a path in its stored OCI runtime spec, then reads the
// spec back through CRI's verbose ContainerStatus, as the podrestore agent
// does.
//
// Neither the kubelet nor containerd ever give a container's cgroup namespace a
// path, but runc's restore rules refuse one (`Do not know how to handle
// namespace NEWCGROUP`), and the end-to-end tests check that the agent does so
// for a real pod. The running container is not touched: only the spec in
// containerd's metadata store changes, which is what CRI reports.
//
//	cgroupns-path -address /run/containerd/containerd.sock [-namespace k8s.io] [-path P] CONTAINER_ID
//
// Without -path the entry points at the container's own cgroup namespace,
// /proc/<task pid>/ns/cgroup. On success it prints one JSON object: the
// container, the path and the namespace list CRI now reports.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// result is what the command prints.
type result struct {
	ContainerID string                 `json:"containerId"`
	Path        string                 `json:"path"`
	Namespaces  []specs.LinuxNamespace `json:"namespaces"`
}

func main() {
	address := flag.String("address", "/run/containerd/containerd.sock", "containerd's socket")
	namespace := flag.String("namespace", "k8s.io", "containerd namespace of the container (CRI's is k8s.io)")
	path := flag.String("path", "", "the cgroup namespace path to record (default: the container's own, /proc/<task pid>/ns/cgroup)")
	timeout := flag.Duration("timeout", 30*time.Second, "how long the whole change may take")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] CONTAINER_ID\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	out, err := run(ctx, *address, *namespace, flag.Arg(0), *path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cgroupns-path: %v\n", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "cgroupns-path: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, address, namespace, id, path string) (*result, error) {
	client, err := containerd.New(address, containerd.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, namespace)

	if path == "" {
		container, err := client.LoadContainer(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("load container %s: %w", id, err)
		}
		task, err := container.Task(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("container %s has no running task: %w", id, err)
		}
		path = fmt.Sprintf("/proc/%d/ns/cgroup", task.Pid())
	}

	// The stored record, changed in its spec field only ("spec" is one of the
	// field paths containerd's metadata store updates).
	store := client.ContainerService()
	record, err := store.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get container %s: %w", id, err)
	}
	if record.Spec == nil {
		return nil, fmt.Errorf("container %s has no stored spec", id)
	}
	var spec specs.Spec
	if err := json.Unmarshal(record.Spec.GetValue(), &spec); err != nil {
		return nil, fmt.Errorf("decode the spec of container %s: %w", id, err)
	}
	if spec.Linux == nil {
		return nil, fmt.Errorf("the spec of container %s has no linux section", id)
	}
	spec.Linux.Namespaces = withCgroupPath(spec.Linux.Namespaces, path)
	record.Spec, err = typeurl.MarshalAny(&spec)
	if err != nil {
		return nil, fmt.Errorf("encode the spec of container %s: %w", id, err)
	}
	if _, err := store.Update(ctx, record, "spec"); err != nil {
		return nil, fmt.Errorf("update the spec of container %s: %w", id, err)
	}

	reported, err := criNamespaces(ctx, client, id)
	if err != nil {
		return nil, err
	}
	if !hasCgroupPath(reported, path) {
		return nil, fmt.Errorf("CRI still reports namespaces %+v for container %s, without cgroup=%s", reported, id, path)
	}
	return &result{ContainerID: id, Path: path, Namespaces: reported}, nil
}

// withCgroupPath sets the path of the cgroup entry, or appends one: runc's
// restore walks the list in order, so an appended entry comes after the
// network and PID namespaces it hands to CRIU.
func withCgroupPath(list []specs.LinuxNamespace, path string) []specs.LinuxNamespace {
	for i := range list {
		if list[i].Type == specs.CgroupNamespace {
			list[i].Path = path
			return list
		}
	}
	return append(list, specs.LinuxNamespace{Type: specs.CgroupNamespace, Path: path})
}

func hasCgroupPath(list []specs.LinuxNamespace, path string) bool {
	for _, ns := range list {
		if ns.Type == specs.CgroupNamespace && ns.Path == path {
			return true
		}
	}
	return false
}

// criNamespaces is the namespace list of `info.runtimeSpec` in CRI's verbose
// ContainerStatus, served on the same socket.
func criNamespaces(ctx context.Context, client *containerd.Client, id string) ([]specs.LinuxNamespace, error) {
	conn, ok := client.Conn().(grpc.ClientConnInterface)
	if !ok {
		return nil, errors.New("containerd's client has no gRPC connection")
	}
	status, err := runtime.NewRuntimeServiceClient(conn).ContainerStatus(ctx, &runtime.ContainerStatusRequest{
		ContainerId: id,
		Verbose:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("CRI ContainerStatus of %s: %w", id, err)
	}
	var info struct {
		RuntimeSpec *specs.Spec `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(status.GetInfo()["info"]), &info); err != nil {
		return nil, fmt.Errorf("decode CRI's verbose info of %s: %w", id, err)
	}
	if info.RuntimeSpec == nil || info.RuntimeSpec.Linux == nil {
		return nil, fmt.Errorf("CRI's verbose info of %s has no runtimeSpec.linux", id)
	}
	return info.RuntimeSpec.Linux.Namespaces, nil
}
