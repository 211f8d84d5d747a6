package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// ---------------------------------------------------------------------------
// Agent-level pod dispatch

func (a *Agent) syncPod(ctx context.Context, pod *corev1.Pod) {
	if ctx.Err() != nil {
		return
	}
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp == nil && (pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName) {
			a.bindPod(ctx, pod)
		}
		return
	}
	if !a.ownsNode(pod.Spec.NodeName) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return
	}
	w := a.workers[pod.UID]
	if w != nil {
		w.update(pod)
		return
	}
	if a.deleted[pod.UID] {
		return // already stopped and deleted with grace period 0
	}
	// finished: the worker is done, even if the informer has not seen the
	// final status yet; never start such a pod again
	terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || a.finished[pod.UID]
	if terminal {
		if pod.DeletionTimestamp != nil {
			a.forceDeleteLocked(ctx, pod)
		}
		return
	}
	if pod.DeletionTimestamp != nil && len(pod.Status.ContainerStatuses) == 0 && len(pod.Status.InitContainerStatuses) == 0 {
		// never started here: nothing to stop
		a.forceDeleteLocked(ctx, pod)
		return
	}
	w = newPodWorker(a, pod)
	a.workers[pod.UID] = w
	go w.run(ctx)
}

// forceDeleteLocked deletes a pod with grace period 0 once its containers
// are gone, as the kubelet does; finalizers (e.g. the Job controller's) stay.
func (a *Agent) forceDeleteLocked(ctx context.Context, pod *corev1.Pod) {
	if a.deleted[pod.UID] {
		return
	}
	a.deleted[pod.UID] = true
	go func() {
		err := a.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To(int64(0)),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			klog.Warningf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
			a.mu.Lock()
			delete(a.deleted, pod.UID)
			a.mu.Unlock()
		}
	}()
}

func (a *Agent) podGone(pod *corev1.Pod) {
	a.mu.Lock()
	w := a.workers[pod.UID]
	delete(a.deleted, pod.UID)
	delete(a.finished, pod.UID)
	a.mu.Unlock()
	if w != nil {
		w.gone()
	}
	go func() {
		if w != nil {
			<-w.done
		}
		_ = os.RemoveAll(filepath.Join(a.opts.stateDir, "pods", string(pod.UID)))
	}()
}

func (a *Agent) findWorker(ns, name, uid string) *podWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.workers {
		if w.ns == ns && w.name == name && (uid == "" || string(w.uid) == uid) {
			select {
			case <-w.done:
				continue
			default:
			}
			return w
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Pod worker: one goroutine per pod running on one of our nodes

type ctr struct {
	spec         corev1.Container
	init         bool
	restartCount int32
	state        corev1.ContainerState
	lastState    corev1.ContainerState
	started      bool
	pid          int
	env          []string
	workDir      string
	logPath      string
	termPath     string
}

type podWorker struct {
	a        *Agent
	uid      types.UID
	ns, name string
	dir      string

	mu         sync.Mutex
	pod        *corev1.Pod
	ctrs       []*ctr // init containers first, then containers
	phase      corev1.PodPhase
	startTime  metav1.Time
	initDone   bool
	volumes    map[string]string // volume name -> host path
	kill       chan struct{}     // closed when the pod is being deleted
	killOnce   sync.Once
	lost       bool // pod object is gone: don't talk to the API about it
	done       chan struct{}
	statusLock sync.Mutex
}

func newPodWorker(a *Agent, pod *corev1.Pod) *podWorker {
	w := &podWorker{a: a, uid: pod.UID, ns: pod.Namespace, name: pod.Name, pod: pod.DeepCopy(),
		dir: filepath.Join(a.opts.stateDir, "pods", string(pod.UID)), phase: corev1.PodPending,
		kill: make(chan struct{}), done: make(chan struct{}), volumes: map[string]string{}}
	prev := map[string]corev1.ContainerStatus{}
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		prev[s.Name] = s
	}
	add := func(c corev1.Container, init bool) {
		cs := &ctr{spec: c, init: init,
			state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
		if p, ok := prev[c.Name]; ok {
			// the node restarted while the pod was running: carry on counting
			cs.restartCount = p.RestartCount
			if (p.State.Running != nil || p.State.Terminated != nil) && pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
				cs.restartCount++
			}
			cs.lastState = p.LastTerminationState
		}
		w.ctrs = append(w.ctrs, cs)
	}
	for _, c := range pod.Spec.InitContainers {
		add(c, true)
	}
	for _, c := range pod.Spec.Containers {
		add(c, false)
	}
	if pod.DeletionTimestamp != nil {
		w.killOnce.Do(func() { close(w.kill) })
	}
	if pod.Status.StartTime != nil {
		w.startTime = *pod.Status.StartTime
	} else {
		w.startTime = metav1.Now()
	}
	return w
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod.DeepCopy()
	w.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		w.killOnce.Do(func() { close(w.kill) })
	}
}

func (w *podWorker) gone() {
	w.mu.Lock()
	w.lost = true
	w.mu.Unlock()
	w.killOnce.Do(func() { close(w.kill) })
}

func (w *podWorker) killed() bool {
	select {
	case <-w.kill:
		return true
	default:
		return false
	}
}

// sleep waits d or until the pod is killed; returns false when killed.
func (w *podWorker) sleep(d time.Duration) bool {
	select {
	case <-w.kill:
		return false
	case <-time.After(d):
		return true
	}
}

func (w *podWorker) logf(format string, args ...interface{}) {
	klog.Infof("pod %s/%s: %s", w.ns, w.name, fmt.Sprintf(format, args...))
}

func (w *podWorker) run(ctx context.Context) {
	defer func() {
		w.a.mu.Lock()
		delete(w.a.workers, w.uid)
		w.a.finished[w.uid] = true
		w.a.mu.Unlock()
		close(w.done)
		// a later informer event re-evaluates (e.g. force-delete a terminal pod)
		if p, err := w.a.podLister.Pods(w.ns).Get(w.name); err == nil && p.UID == w.uid {
			w.a.syncPod(ctx, p)
		}
	}()
	pod := w.snapshot()
	_ = os.MkdirAll(w.dir, 0o755)

	// a pod that was running when the node went away and must not restart
	if pod.Status.Phase == corev1.PodRunning && pod.Spec.RestartPolicy == corev1.RestartPolicyNever && pod.DeletionTimestamp == nil {
		w.mu.Lock()
		for _, c := range w.ctrs {
			if c.state.Terminated == nil {
				c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137,
					Reason: "ContainerStatusUnknown", Message: "The container could not be located when the pod was terminated (node restarted)",
					FinishedAt: metav1.Now()}}
			}
		}
		w.phase = corev1.PodFailed
		w.mu.Unlock()
		w.pushStatus(ctx)
		return
	}

	w.pushStatus(ctx)
	w.logf("starting on %s", pod.Spec.NodeName)

	// volumes
	for {
		err := w.setupVolumes(ctx)
		if err == nil {
			break
		}
		w.setWaitingAll("ContainerCreating", err.Error())
		w.pushStatus(ctx)
		if !w.sleep(2 * time.Second) {
			w.finish(ctx)
			return
		}
	}
	stopTokens := make(chan struct{})
	defer close(stopTokens)
	go w.refreshTokens(ctx, stopTokens)

	// init containers, one after another
	for _, c := range w.ctrs {
		if !c.init {
			continue
		}
		for {
			code, ok := w.runContainer(ctx, c)
			if !ok {
				w.finish(ctx)
				return
			}
			if code == 0 {
				break
			}
			if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				w.mu.Lock()
				w.phase = corev1.PodFailed
				w.mu.Unlock()
				w.setWaitingRest("PodInitializing")
				w.pushStatus(ctx)
				return
			}
			if !w.backoff(ctx, c) {
				w.finish(ctx)
				return
			}
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.phase = corev1.PodRunning
	w.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range w.ctrs {
		if c.init {
			continue
		}
		wg.Add(1)
		go func(c *ctr) {
			defer wg.Done()
			for {
				code, ok := w.runContainer(ctx, c)
				if !ok {
					return
				}
				switch pod.Spec.RestartPolicy {
				case corev1.RestartPolicyNever:
					return
				case corev1.RestartPolicyOnFailure:
					if code == 0 {
						return
					}
				}
				if !w.backoff(ctx, c) {
					return
				}
			}
		}(c)
	}
	wg.Wait()
	if w.killed() {
		w.finish(ctx)
		return
	}
	w.mu.Lock()
	w.phase = corev1.PodSucceeded
	for _, c := range w.ctrs {
		if !c.init && (c.state.Terminated == nil || c.state.Terminated.ExitCode != 0) {
			w.phase = corev1.PodFailed
		}
	}
	w.mu.Unlock()
	w.logf("finished: %s", w.phase)
	w.pushStatus(ctx)
}

// finish is called once all processes are gone after the pod was killed.
func (w *podWorker) finish(ctx context.Context) {
	w.mu.Lock()
	lost := w.lost
	if !w.a.stopping {
		w.phase = corev1.PodSucceeded
		for _, c := range w.ctrs {
			if c.state.Terminated == nil {
				msg := "container was not started before the pod was deleted"
				if c.started {
					msg = "container killed because the pod was deleted"
				}
				c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown", Message: msg, FinishedAt: metav1.Now()}}
			}
			if !c.init && c.state.Terminated.ExitCode != 0 {
				w.phase = corev1.PodFailed
			}
		}
	}
	stopping := w.a.stopping
	w.mu.Unlock()
	if lost || stopping {
		return
	}
	w.logf("stopped (pod deleted): %s", w.phase)
	w.pushStatus(ctx)
	pod := w.snapshot()
	w.a.mu.Lock()
	w.a.forceDeleteLocked(ctx, pod)
	w.a.mu.Unlock()
}

func (w *podWorker) snapshot() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod.DeepCopy()
}

func (w *podWorker) setWaitingAll(reason, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.ctrs {
		if c.state.Terminated == nil && c.state.Running == nil {
			c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
		}
	}
}

func (w *podWorker) setWaitingRest(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.ctrs {
		if !c.init && c.state.Waiting != nil {
			c.state.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
		}
	}
}

func (w *podWorker) backoff(ctx context.Context, c *ctr) bool {
	w.mu.Lock()
	n := c.restartCount
	d := time.Second << min(n, 4) // 1s .. 16s
	d = min(d, 10*time.Second)
	c.lastState = c.state
	c.restartCount++
	c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s", d, c.spec.Name, w.name, w.ns)}}
	w.mu.Unlock()
	w.pushStatus(ctx)
	return w.sleep(d)
}

// runContainer starts one container and waits for it. ok=false means the pod
// was killed (the container has been stopped, or was never started).
func (w *podWorker) runContainer(ctx context.Context, c *ctr) (code int, ok bool) {
	for {
		if w.killed() {
			return 0, false
		}
		reason, err := w.prepareContainer(ctx, c)
		if err == nil {
			break
		}
		if reason == "StartError" {
			w.mu.Lock()
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError",
				Message: err.Error(), StartedAt: metav1.Now(), FinishedAt: metav1.Now()}}
			w.mu.Unlock()
			lf := openLog(c.logPath)
			fmt.Fprintf(lf, "localnode: %v\n", err)
			lf.Close()
			w.pushStatus(ctx)
			return 128, true
		}
		w.mu.Lock()
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}}
		w.mu.Unlock()
		w.pushStatus(ctx)
		if !w.sleep(2 * time.Second) {
			return 0, false
		}
	}

	spec, _ := json.Marshal(w.initSpec(c))
	cdir := filepath.Join(w.dir, "containers", c.spec.Name)
	specPath := filepath.Join(cdir, "spec.json")
	if err := os.WriteFile(specPath, spec, 0o600); err != nil {
		klog.Errorf("write %s: %v", specPath, err)
	}
	_ = os.WriteFile(c.termPath, nil, 0o666)
	_ = os.Chmod(c.termPath, 0o666)
	logf := openLog(c.logPath)
	self, _ := os.Executable()
	cmd := exec.Command(self, "container-init", specPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = c.env
	// own session (and so process group) per container: stop() signals the
	// whole group, and "scripts/cluster down" finds leftovers by session id
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		w.mu.Lock()
		c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: metav1.Now(), FinishedAt: metav1.Now()}}
		w.mu.Unlock()
		w.pushStatus(ctx)
		return 128, true
	}
	w.a.recordSession(cmd.Process.Pid)
	w.mu.Lock()
	c.pid = cmd.Process.Pid
	c.started = true
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	startedAt := c.state.Running.StartedAt
	w.mu.Unlock()
	w.logf("container %s started (pid %d): %q", c.spec.Name, c.pid, c.spec.Command)
	w.pushStatus(ctx)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-exited:
	case <-w.kill:
		werr = w.stop(c, cmd, exited)
	}
	logf.Close()
	code = exitCode(cmd, werr)
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	msg := readTail(c.termPath, 4096)
	if msg == "" && code != 0 && c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		msg = readTail(c.logPath, 2048)
	}
	w.mu.Lock()
	c.pid = 0
	c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason,
		Message: msg, StartedAt: startedAt, FinishedAt: metav1.Now(),
		ContainerID: w.containerID(c)}}
	killed := w.killed()
	w.mu.Unlock()
	w.logf("container %s exited with %d", c.spec.Name, code)
	if killed {
		return code, false
	}
	w.pushStatus(ctx)
	return code, true
}

// stop sends SIGTERM to the container's process group, then SIGKILL after
// the (capped) grace period.
func (w *podWorker) stop(c *ctr, cmd *exec.Cmd, exited chan error) error {
	grace := 30 * time.Second
	if p := w.snapshot(); p.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
	} else if p.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return w.stopWithin(cmd, exited, min(grace, w.a.opts.maxGrace))
}

func (w *podWorker) stopWithin(cmd *exec.Cmd, exited chan error, grace time.Duration) error {
	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case err := <-exited:
		_ = syscall.Kill(-pid, syscall.SIGKILL) // leftovers in the group
		return err
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return <-exited
}

// killAll is used on node shutdown.
func (w *podWorker) killAll(grace time.Duration) {
	w.mu.Lock()
	var pids []int
	for _, c := range w.ctrs {
		if c.pid > 0 {
			pids = append(pids, c.pid)
		}
	}
	w.mu.Unlock()
	w.killOnce.Do(func() { close(w.kill) })
	for _, p := range pids {
		_ = syscall.Kill(-p, syscall.SIGTERM)
	}
	select {
	case <-w.done:
	case <-time.After(grace):
		for _, p := range pids {
			_ = syscall.Kill(-p, syscall.SIGKILL)
		}
		select {
		case <-w.done:
		case <-time.After(2 * time.Second):
		}
	}
}

func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return 128
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

func openLog(path string) *os.File {
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f, _ = os.Open(os.DevNull)
	}
	return f
}

func readTail(path string, max int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if int64(len(b)) > max {
		b = b[int64(len(b))-max:]
	}
	return string(b)
}

func (w *podWorker) containerID(c *ctr) string {
	return fmt.Sprintf("localnode://%s-%s-%d", string(w.uid)[:8], c.spec.Name, c.restartCount)
}

// ---------------------------------------------------------------------------
// status

var ourConditions = map[corev1.PodConditionType]bool{
	corev1.PodScheduled: true, corev1.PodInitialized: true, corev1.ContainersReady: true,
	corev1.PodReady: true, corev1.PodReadyToStartContainers: true,
}

func (w *podWorker) buildStatus(old corev1.PodStatus) corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := corev1.PodStatus{
		Phase:     w.phase,
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     "127.0.0.1",
		PodIPs:    []corev1.PodIP{{IP: "127.0.0.1"}},
		StartTime: &w.startTime,
		QOSClass:  old.QOSClass,
	}
	allRunning := true
	for _, c := range w.ctrs {
		s := corev1.ContainerStatus{
			Name: c.spec.Name, State: c.state, LastTerminationState: c.lastState,
			RestartCount: c.restartCount, Image: c.spec.Image, ImageID: "localnode://" + c.spec.Image,
			Started: ptr.To(c.state.Running != nil), Ready: c.state.Running != nil && !c.init,
		}
		if c.started {
			s.ContainerID = w.containerID(c)
		}
		if c.init {
			s.Ready = c.state.Terminated != nil && c.state.Terminated.ExitCode == 0
			st.InitContainerStatuses = append(st.InitContainerStatuses, s)
		} else {
			if c.state.Running == nil {
				allRunning = false
			}
			st.ContainerStatuses = append(st.ContainerStatuses, s)
		}
	}
	now := metav1.Now()
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: now}
		for _, oc := range old.Conditions {
			if oc.Type == t && oc.Status == s {
				c.LastTransitionTime = oc.LastTransitionTime
			}
		}
		return c
	}
	terminal := w.phase == corev1.PodSucceeded || w.phase == corev1.PodFailed
	ready := allRunning && !terminal && w.initDone
	notReady := "ContainersNotReady"
	if terminal && w.phase == corev1.PodSucceeded {
		notReady = "PodCompleted"
	}
	initReason := "ContainersNotInitialized"
	if terminal && w.phase == corev1.PodSucceeded {
		initReason = "PodCompleted"
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, !terminal, ""),
		cond(corev1.PodInitialized, w.initDone || (terminal && w.phase == corev1.PodSucceeded), initReason),
		cond(corev1.PodReady, ready, notReady),
		cond(corev1.ContainersReady, ready, notReady),
		cond(corev1.PodScheduled, true, ""),
	}
	for _, oc := range old.Conditions {
		if !ourConditions[oc.Type] {
			st.Conditions = append(st.Conditions, oc)
		}
	}
	return st
}

func (w *podWorker) pushStatus(ctx context.Context) {
	w.statusLock.Lock()
	defer w.statusLock.Unlock()
	w.mu.Lock()
	lost := w.lost
	w.mu.Unlock()
	if lost || ctx.Err() != nil {
		return
	}
	err := retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err)
	}, func() error {
		p, err := w.a.cs.CoreV1().Pods(w.ns).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.UID != w.uid {
			return apierrors.NewNotFound(corev1.Resource("pods"), w.name)
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return nil // terminal phases never change
		}
		p.Status = w.buildStatus(p.Status)
		p.Status.ObservedGeneration = p.Generation
		_, err = w.a.cs.CoreV1().Pods(w.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		klog.Warningf("pod %s/%s: update status: %v", w.ns, w.name, err)
	}
}

// ---------------------------------------------------------------------------
// container preparation: env, mounts

type mountSpec struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	File     bool   `json:"file,omitempty"`
}

type containerSpec struct {
	Argv   []string    `json:"argv"`
	Env    []string    `json:"env"`
	Dir    string      `json:"dir"`
	Mounts []mountSpec `json:"mounts"`
	UID    *int64      `json:"uid,omitempty"`
	GID    *int64      `json:"gid,omitempty"`
}

func (w *podWorker) prepareContainer(ctx context.Context, c *ctr) (reason string, err error) {
	pod := w.snapshot()
	cdir := filepath.Join(w.dir, "containers", c.spec.Name)
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return "CreateContainerError", err
	}
	c.logPath = filepath.Join(cdir, "log")
	c.termPath = filepath.Join(cdir, "termination-log")
	env, err := w.a.containerEnv(ctx, pod, &c.spec)
	if err != nil {
		return "CreateContainerConfigError", err
	}
	vars := envMap(env)
	if len(c.spec.Command) == 0 {
		return "StartError", fmt.Errorf("container %q has no command: localnode ignores images (%q) and runs only command+args on the host", c.spec.Name, c.spec.Image)
	}
	argv := make([]string, 0, len(c.spec.Command)+len(c.spec.Args))
	for _, s := range append(append([]string{}, c.spec.Command...), c.spec.Args...) {
		argv = append(argv, expand(s, vars))
	}
	if !strings.Contains(argv[0], "/") {
		if _, err := lookPath(argv[0], vars["PATH"]); err != nil {
			return "StartError", fmt.Errorf("exec: %q: executable file not found in $PATH (%s)", argv[0], vars["PATH"])
		}
	}
	w.mu.Lock()
	c.env = env
	c.workDir = c.spec.WorkingDir
	if c.workDir == "" {
		c.workDir = "/"
	}
	c.spec.Command, c.spec.Args = argv[:len(c.spec.Command)], argv[len(c.spec.Command):]
	w.mu.Unlock()
	return "", nil
}

func lookPath(file, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("not found")
}

func (w *podWorker) initSpec(c *ctr) containerSpec {
	pod := w.snapshot()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := containerSpec{Argv: append(append([]string{}, c.spec.Command...), c.spec.Args...), Env: c.env, Dir: c.workDir}
	for _, m := range c.spec.VolumeMounts {
		src, ok := w.volumes[m.Name]
		if !ok {
			continue
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
			if _, err := os.Stat(src); os.IsNotExist(err) {
				_ = os.MkdirAll(src, 0o777)
			}
		}
		st, err := os.Stat(src)
		s.Mounts = append(s.Mounts, mountSpec{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly, File: err == nil && !st.IsDir()})
	}
	tp := c.spec.TerminationMessagePath
	if tp == "" {
		tp = corev1.TerminationMessagePathDefault
	}
	s.Mounts = append(s.Mounts, mountSpec{Source: c.termPath, Target: tp, File: true})
	sort.SliceStable(s.Mounts, func(i, j int) bool { return s.Mounts[i].Target < s.Mounts[j].Target })
	if w.a.opts.runAsUser {
		sc := pod.Spec.SecurityContext
		if sc != nil {
			s.UID, s.GID = sc.RunAsUser, sc.RunAsGroup
		}
		if csc := c.spec.SecurityContext; csc != nil {
			if csc.RunAsUser != nil {
				s.UID = csc.RunAsUser
			}
			if csc.RunAsGroup != nil {
				s.GID = csc.RunAsGroup
			}
		}
	}
	return s
}

// ---------------------------------------------------------------------------
// volumes

func (w *podWorker) setupVolumes(ctx context.Context) error {
	pod := w.snapshot()
	vols := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		switch {
		case v.PersistentVolumeClaim != nil:
			p, err := w.a.pvcPath(ctx, pod.Namespace, v.PersistentVolumeClaim.ClaimName)
			if err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			vols[v.Name] = p
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return err
			}
			_ = os.Chmod(dir, 0o777)
			vols[v.Name] = dir
		case v.HostPath != nil:
			t := ptr.Deref(v.HostPath.Type, corev1.HostPathUnset)
			if t == corev1.HostPathDirectoryOrCreate {
				_ = os.MkdirAll(v.HostPath.Path, 0o755)
			} else if t == corev1.HostPathFileOrCreate {
				_ = os.MkdirAll(filepath.Dir(v.HostPath.Path), 0o755)
				f, _ := os.OpenFile(v.HostPath.Path, os.O_CREATE, 0o644)
				if f != nil {
					f.Close()
				}
			}
			vols[v.Name] = v.HostPath.Path
		case v.Secret != nil || v.ConfigMap != nil || v.Projected != nil || v.DownwardAPI != nil:
			files, err := w.a.volumeFiles(ctx, pod, v)
			if err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			if err := writeFiles(dir, files); err != nil {
				return err
			}
			vols[v.Name] = dir
		default:
			// unsupported volume types get an empty directory
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return err
			}
			vols[v.Name] = dir
		}
	}
	w.mu.Lock()
	w.volumes = vols
	w.mu.Unlock()
	return nil
}

func (a *Agent) pvcPath(ctx context.Context, ns, name string) (string, error) {
	pvc, err := a.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("persistentvolumeclaim %q is not bound yet", name)
	}
	pv, err := a.cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	switch {
	case pv.Spec.HostPath != nil:
		_ = os.MkdirAll(pv.Spec.HostPath.Path, 0o777)
		return pv.Spec.HostPath.Path, nil
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, nil
	}
	return "", fmt.Errorf("persistentvolume %q is neither hostPath nor local", pv.Name)
}

type fileEntry struct {
	data []byte
	mode os.FileMode
}

func modeOf(m *int32, def *int32) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	if def != nil {
		return os.FileMode(*def)
	}
	return 0o644
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath, def *int32, out map[string]fileEntry) error {
	if len(items) == 0 {
		for k, v := range data {
			out[k] = fileEntry{v, modeOf(nil, def)}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("key %q not found", it.Key)
		}
		out[it.Path] = fileEntry{v, modeOf(it.Mode, def)}
	}
	return nil
}

func (a *Agent) volumeFiles(ctx context.Context, pod *corev1.Pod, v corev1.Volume) (map[string]fileEntry, error) {
	out := map[string]fileEntry{}
	secret := func(name string, items []corev1.KeyToPath, optional *bool, def *int32) error {
		s, err := a.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(optional, false) {
			return nil
		}
		if err != nil {
			return err
		}
		return keyFiles(s.Data, items, def, out)
	}
	configMap := func(name string, items []corev1.KeyToPath, optional *bool, def *int32) error {
		cm, err := a.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(optional, false) {
			return nil
		}
		if err != nil {
			return err
		}
		data := map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		return keyFiles(data, items, def, out)
	}
	downward := func(items []corev1.DownwardAPIVolumeFile, def *int32) error {
		for _, it := range items {
			if it.FieldRef == nil {
				out[it.Path] = fileEntry{[]byte("0"), modeOf(it.Mode, def)}
				continue
			}
			val, err := fieldValue(pod, it.FieldRef.FieldPath)
			if err != nil {
				return err
			}
			out[it.Path] = fileEntry{[]byte(val), modeOf(it.Mode, def)}
		}
		return nil
	}
	switch {
	case v.Secret != nil:
		return out, secret(v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, v.Secret.DefaultMode)
	case v.ConfigMap != nil:
		return out, configMap(v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, v.ConfigMap.DefaultMode)
	case v.DownwardAPI != nil:
		return out, downward(v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
	}
	for _, src := range v.Projected.Sources {
		var err error
		switch {
		case src.Secret != nil:
			err = secret(src.Secret.Name, src.Secret.Items, src.Secret.Optional, v.Projected.DefaultMode)
		case src.ConfigMap != nil:
			err = configMap(src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, v.Projected.DefaultMode)
		case src.DownwardAPI != nil:
			err = downward(src.DownwardAPI.Items, v.Projected.DefaultMode)
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = a.serviceAccountToken(ctx, pod, src.ServiceAccountToken)
			out[src.ServiceAccountToken.Path] = fileEntry{[]byte(tok), modeOf(nil, v.Projected.DefaultMode)}
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (a *Agent) serviceAccountToken(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		tr.Spec.Audiences = []string{p.Audience}
	}
	res, err := a.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %q: %w", sa, err)
	}
	return res.Status.Token, nil
}

// refreshTokens rewrites projected volumes (service account tokens) every 20
// minutes; tokens live 1h by default.
func (w *podWorker) refreshTokens(ctx context.Context, stop chan struct{}) {
	t := time.NewTicker(20 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pod := w.snapshot()
		for _, v := range pod.Spec.Volumes {
			if v.Projected == nil {
				continue
			}
			if files, err := w.a.volumeFiles(ctx, pod, v); err == nil {
				_ = writeFiles(filepath.Join(w.dir, "volumes", v.Name), files)
			} else {
				klog.Warningf("pod %s/%s: refresh volume %s: %v", w.ns, w.name, v.Name, err)
			}
		}
	}
}

func writeFiles(dir string, files map[string]fileEntry) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, f := range files {
		p := filepath.Join(dir, filepath.Clean("/"+name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, f.data, f.mode.Perm()); err != nil {
			return err
		}
		_ = os.Chmod(tmp, f.mode.Perm())
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	return nil
}

// recordSession appends a container's session id to <state>/sessions, so
// that processes that outlive a crashed localnode can still be found.
func (a *Agent) recordSession(pid int) {
	f, err := os.OpenFile(filepath.Join(a.opts.stateDir, "sessions"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	fmt.Fprintln(f, pid)
	f.Close()
}
