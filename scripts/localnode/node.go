package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

const (
	annProvisioned = "localnode.baas.dev/provisioned"
	leaseSeconds   = 40
)

func memoryBytes() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 8 << 30
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		var kb int64
		if n, _ := fmt.Sscanf(s.Text(), "MemTotal: %d kB", &kb); n == 1 {
			return kb * 1024
		}
	}
	return 8 << 30
}

func nodeLabels(name string) map[string]string {
	return map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
		"type":                   "localnode",
	}
}

func (a *Agent) nodeStatus(name string, old *corev1.NodeStatus) corev1.NodeStatus {
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memoryBytes(), resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(250, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	cond := func(t corev1.NodeConditionType, st corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: st, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		if old != nil {
			for _, oc := range old.Conditions {
				if oc.Type == t && oc.Status == st {
					c.LastTransitionTime = oc.LastTransitionTime
				}
			}
		}
		return c
	}
	var uname [3]string
	for i, f := range []string{"/proc/sys/kernel/osrelease", "/etc/machine-id", "/proc/sys/kernel/random/boot_id"} {
		b, _ := os.ReadFile(f)
		uname[i] = strings.TrimSpace(string(b))
	}
	return corev1.NodeStatus{
		Capacity:    res,
		Allocatable: res,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "localnode has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "localnode has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "localnode has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "localnode is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(a.nodes[name])}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: uname[1], SystemUUID: uname[1], BootID: uname[2],
			KernelVersion: uname[0], OSImage: "localnode (processes on the host)",
			ContainerRuntimeVersion: "localnode://0.1", KubeletVersion: a.opts.kubeVersion,
			OperatingSystem: "linux", Architecture: runtime.GOARCH,
		},
	}
}

func (a *Agent) registerNode(ctx context.Context, name string) error {
	nodes := a.cs.CoreV1().Nodes()
	var node *corev1.Node
	err := retry.OnError(retry.DefaultBackoff, func(error) bool { return true }, func() error {
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			n, err = nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: nodeLabels(name)}}, metav1.CreateOptions{})
		}
		if err != nil {
			return err
		}
		changed := false
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		for k, v := range nodeLabels(name) {
			if n.Labels[k] != v {
				n.Labels[k], changed = v, true
			}
		}
		if n.Spec.Unschedulable {
			n.Spec.Unschedulable, changed = false, true
		}
		if changed {
			if n, err = nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		node = n
		return nil
	})
	if err != nil {
		return err
	}
	if err := a.updateNodeStatus(ctx, name); err != nil {
		return err
	}
	klog.Infof("registered node %s (uid %s), kubelet API on 127.0.0.1:%d", name, node.UID, a.nodes[name])
	return a.renewLease(ctx, name, node)
}

func (a *Agent) updateNodeStatus(ctx context.Context, name string) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n, err := a.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status = a.nodeStatus(name, &n.Status)
		_, err = a.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func (a *Agent) renewLease(ctx context.Context, name string, node *corev1.Node) error {
	leases := a.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease},
			Spec:       coordv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(leaseSeconds)), RenewTime: &now},
		}
		if node != nil {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: node.UID}}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	l.Spec.HolderIdentity = ptr.To(name)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(leaseSeconds))
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

func (a *Agent) heartbeat(ctx context.Context, name string) {
	lease := time.NewTicker(10 * time.Second)
	status := time.NewTicker(60 * time.Second)
	defer lease.Stop()
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			if err := a.renewLease(ctx, name, nil); err != nil && ctx.Err() == nil {
				klog.Warningf("renew lease of %s: %v", name, err)
			}
		case <-status.C:
			if err := a.updateNodeStatus(ctx, name); err != nil && ctx.Err() == nil {
				klog.Warningf("update status of node %s: %v", name, err)
			}
		}
	}
}

// bindPod plays the scheduler: the first of our nodes that satisfies the
// pod's nodeName/nodeSelector/required node affinity wins.
func (a *Agent) bindPod(ctx context.Context, pod *corev1.Pod) {
	a.mu.Lock()
	if a.binding[pod.UID] {
		a.mu.Unlock()
		return
	}
	a.binding[pod.UID] = true
	a.mu.Unlock()
	go func() {
		defer func() { a.mu.Lock(); delete(a.binding, pod.UID); a.mu.Unlock() }()
		req := nodeaffinity.GetRequiredNodeAffinity(pod)
		target := ""
		for _, name := range a.opts.nodes {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: nodeLabels(name)}}
			if ok, _ := req.Match(n); ok {
				target = name
				break
			}
		}
		if target == "" {
			klog.V(2).Infof("pod %s/%s: no node matches its node selector/affinity", pod.Namespace, pod.Name)
			a.setUnschedulable(ctx, pod)
			return
		}
		err := a.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: target},
		}, metav1.CreateOptions{})
		if err != nil {
			klog.Warningf("bind %s/%s to %s: %v", pod.Namespace, pod.Name, target, err)
			return
		}
		klog.Infof("bound pod %s/%s to %s", pod.Namespace, pod.Name, target)
	}()
}

func (a *Agent) setUnschedulable(ctx context.Context, pod *corev1.Pod) {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return
		}
	}
	p := pod.DeepCopy()
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message:            fmt.Sprintf("0/%d nodes are available: node(s) didn't match Pod's node affinity/selector", len(a.nodes)),
		LastTransitionTime: metav1.Now(),
	})
	if _, err := a.cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		klog.V(2).Infof("mark %s/%s unschedulable: %v", p.Namespace, p.Name, err)
	}
}

// syncPVC provisions a hostPath PersistentVolume, pre-bound to the claim, for
// every pending claim (whatever its storage class); the PV controller of
// kube-controller-manager then binds them.
func (a *Agent) syncPVC(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	if pvc.DeletionTimestamp != nil || pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.Selector != nil {
		return
	}
	dir := filepath.Join(a.opts.stateDir, "volumes", pvc.Namespace, pvc.Name+"-"+string(pvc.UID)[:8])
	if err := os.MkdirAll(dir, 0o777); err != nil {
		klog.Errorf("provision %s/%s: %v", pvc.Namespace, pvc.Name, err)
		return
	}
	_ = os.Chmod(dir, 0o777)
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "pvc-" + string(pvc.UID),
			Annotations: map[string]string{annProvisioned: "true", "pv.kubernetes.io/provisioned-by": "localnode"},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			VolumeMode:                    pvc.Spec.VolumeMode,
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)},
			},
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
		},
	}
	if pvc.Spec.StorageClassName != nil {
		pv.Spec.StorageClassName = *pvc.Spec.StorageClassName
	}
	_, err := a.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if err == nil {
		klog.Infof("provisioned %s for claim %s/%s at %s", pv.Name, pvc.Namespace, pvc.Name, dir)
	} else if !apierrors.IsAlreadyExists(err) {
		klog.Errorf("provision %s/%s: %v", pvc.Namespace, pvc.Name, err)
	}
}

// syncPV deletes volumes we provisioned once their claim is gone (like the
// Delete reclaim policy of a dynamic provisioner), data included.
func (a *Agent) syncPV(ctx context.Context, pv *corev1.PersistentVolume) {
	if pv.Annotations[annProvisioned] != "true" || pv.DeletionTimestamp != nil {
		return
	}
	if pv.Status.Phase != corev1.VolumeReleased && pv.Status.Phase != corev1.VolumeFailed {
		return
	}
	if pv.Spec.ClaimRef != nil {
		if c, err := a.pvcLister.PersistentVolumeClaims(pv.Spec.ClaimRef.Namespace).Get(pv.Spec.ClaimRef.Name); err == nil && c.UID == pv.Spec.ClaimRef.UID {
			return
		}
	}
	if err := a.cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		klog.Warningf("delete released %s: %v", pv.Name, err)
		return
	}
	if hp := pv.Spec.HostPath; hp != nil && strings.HasPrefix(hp.Path, filepath.Join(a.opts.stateDir, "volumes")+"/") {
		_ = os.RemoveAll(hp.Path)
	}
	klog.Infof("deleted released volume %s", pv.Name)
}
