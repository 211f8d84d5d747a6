// Command localnode is a tiny stand-in for a kubelet plus container runtime,
// for a local development cluster on one machine. It registers one or more
// Node objects, binds unscheduled pods to them (no scheduler runs), runs the
// pods' containers as local processes (each in a private mount namespace so
// volumes appear at their mountPaths), reports pod status like a kubelet,
// provisions hostPath PersistentVolumes for pending claims, and serves the
// kubelet API (exec, containerLogs, healthz) so kubectl exec/logs work.
//
// Images are ignored: a container's command+args are run from the host PATH.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

type options struct {
	kubeconfig    string
	nodes         []string
	portBase      int
	stateDir      string
	tlsCert       string
	tlsKey        string
	caFile        string
	containerPath string
	apiHost       string
	apiPort       string
	maxGrace      time.Duration
	kubeVersion   string
	runAsUser     bool
}

type Agent struct {
	opts      options
	cs        kubernetes.Interface
	podLister corelisters.PodLister
	pvcLister corelisters.PersistentVolumeClaimLister
	nodes     map[string]int // node name -> kubelet port
	ca        []byte

	mu       sync.Mutex
	workers  map[types.UID]*podWorker
	binding  map[types.UID]bool
	deleted  map[types.UID]bool // pods we already asked to delete (grace 0)
	finished map[types.UID]bool // pods whose worker has ended
	stopping bool
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "container-init" {
		containerInit(os.Args[2])
		return
	}
	var o options
	var nodes string
	klog.InitFlags(nil)
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the API server")
	flag.StringVar(&nodes, "nodes", "local-node", "comma-separated node names to serve")
	flag.IntVar(&o.portBase, "port-base", 10250, "kubelet API port of the first node; node i uses port-base+i")
	flag.StringVar(&o.stateDir, "state-dir", "", "directory for pod and volume state (required)")
	flag.StringVar(&o.tlsCert, "tls-cert", "", "kubelet API serving certificate")
	flag.StringVar(&o.tlsKey, "tls-key", "", "kubelet API serving key")
	flag.StringVar(&o.caFile, "ca-file", "", "cluster CA: verifies API server client certs; written as ca.crt into pods")
	flag.StringVar(&o.containerPath, "container-path", os.Getenv("PATH"), "PATH for container processes")
	flag.StringVar(&o.apiHost, "apiserver-host", "127.0.0.1", "KUBERNETES_SERVICE_HOST for pods")
	flag.StringVar(&o.apiPort, "apiserver-port", "6443", "KUBERNETES_SERVICE_PORT for pods")
	flag.DurationVar(&o.maxGrace, "max-grace-period", 10*time.Second, "cap for terminationGracePeriodSeconds")
	flag.StringVar(&o.kubeVersion, "kubelet-version", "v1.37.2", "version reported in node info")
	flag.BoolVar(&o.runAsUser, "honor-run-as-user", false, "switch to securityContext.runAsUser/runAsGroup before exec")
	flag.Parse()
	for _, n := range strings.Split(nodes, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.nodes = append(o.nodes, n)
		}
	}
	if o.stateDir == "" || len(o.nodes) == 0 {
		klog.Exit("--state-dir and --nodes are required")
	}
	if err := run(o); err != nil {
		klog.Exitf("localnode: %v", err)
	}
}

func run(o options) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cfg.UserAgent = "localnode"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	a := &Agent{opts: o, cs: cs, nodes: map[string]int{}, workers: map[types.UID]*podWorker{},
		binding: map[types.UID]bool{}, deleted: map[types.UID]bool{}, finished: map[types.UID]bool{}}
	if o.caFile != "" {
		if a.ca, err = os.ReadFile(o.caFile); err != nil {
			return err
		}
	}
	for i, n := range o.nodes {
		a.nodes[n] = o.portBase + i
	}
	for _, d := range []string{"pods", "volumes"} {
		if err := os.MkdirAll(filepath.Join(o.stateDir, d), 0o755); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	for _, n := range o.nodes {
		if err := a.registerNode(ctx, n); err != nil {
			return fmt.Errorf("register node %s: %w", n, err)
		}
		if err := a.serveKubeletAPI(n, a.nodes[n]); err != nil {
			return fmt.Errorf("kubelet API of %s: %w", n, err)
		}
		go a.heartbeat(ctx, n)
	}

	f := informers.NewSharedInformerFactory(cs, 30*time.Second)
	podInf := f.Core().V1().Pods()
	pvcInf := f.Core().V1().PersistentVolumeClaims()
	pvInf := f.Core().V1().PersistentVolumes()
	a.podLister = podInf.Lister()
	a.pvcLister = pvcInf.Lister()
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { a.syncPod(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj interface{}) { a.syncPod(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj interface{}) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.podGone(p)
			}
		},
	})
	pvcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { a.syncPVC(ctx, obj.(*corev1.PersistentVolumeClaim)) },
		UpdateFunc: func(_, obj interface{}) { a.syncPVC(ctx, obj.(*corev1.PersistentVolumeClaim)) },
	})
	pvInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { a.syncPV(ctx, obj.(*corev1.PersistentVolume)) },
		UpdateFunc: func(_, obj interface{}) { a.syncPV(ctx, obj.(*corev1.PersistentVolume)) },
	})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	klog.Infof("localnode ready: nodes %v", o.nodes)

	<-ctx.Done()
	klog.Info("localnode: shutting down, stopping containers")
	a.shutdown()
	return nil
}

func (a *Agent) shutdown() {
	a.mu.Lock()
	a.stopping = true
	ws := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func(w *podWorker) { defer wg.Done(); w.killAll(3 * time.Second) }(w)
	}
	wg.Wait()
}

func (a *Agent) ownsNode(name string) bool { _, ok := a.nodes[name]; return ok }
