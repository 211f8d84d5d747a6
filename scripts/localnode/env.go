package main

import (
	"context"
	"fmt"
	"math"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// containerEnv builds the environment like the kubelet: service variables
// for the API server, envFrom, then env (with $(VAR) expansion).
func (a *Agent) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	var order []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	set("PATH", a.opts.containerPath)
	set("HOSTNAME", pod.Name)
	set("HOME", "/root")
	if ptr.Deref(pod.Spec.EnableServiceLinks, true) || true {
		h, p := a.opts.apiHost, a.opts.apiPort
		set("KUBERNETES_SERVICE_HOST", h)
		set("KUBERNETES_SERVICE_PORT", p)
		set("KUBERNETES_SERVICE_PORT_HTTPS", p)
		set("KUBERNETES_PORT", "tcp://"+h+":"+p)
		set("KUBERNETES_PORT_"+p+"_TCP", "tcp://"+h+":"+p)
		set("KUBERNETES_PORT_"+p+"_TCP_PROTO", "tcp")
		set("KUBERNETES_PORT_"+p+"_TCP_PORT", p)
		set("KUBERNETES_PORT_"+p+"_TCP_ADDR", h)
	}
	for _, ef := range c.EnvFrom {
		var data map[string]string
		switch {
		case ef.SecretRef != nil:
			s, err := a.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, ef.SecretRef.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && ptr.Deref(ef.SecretRef.Optional, false) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("secret %q: %w", ef.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		case ef.ConfigMapRef != nil:
			cm, err := a.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && ptr.Deref(ef.ConfigMapRef.Optional, false) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("configmap %q: %w", ef.ConfigMapRef.Name, err)
			}
			data = cm.Data
		}
		for k, v := range data {
			set(ef.Prefix+k, v)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vals))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.SecretKeyRef != nil:
			r := vf.SecretKeyRef
			s, err := a.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && ptr.Deref(r.Optional, false) {
					continue
				}
				if apierrors.IsNotFound(err) {
					return nil, fmt.Errorf("secret %q not found", r.Name)
				}
				return nil, err
			}
			v, ok := s.Data[r.Key]
			if !ok {
				if ptr.Deref(r.Optional, false) {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", r.Key, pod.Namespace, r.Name)
			}
			set(e.Name, string(v))
		case vf.ConfigMapKeyRef != nil:
			r := vf.ConfigMapKeyRef
			cm, err := a.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && ptr.Deref(r.Optional, false) {
					continue
				}
				if apierrors.IsNotFound(err) {
					return nil, fmt.Errorf("configmap %q not found", r.Name)
				}
				return nil, err
			}
			v, ok := cm.Data[r.Key]
			if !ok {
				if ptr.Deref(r.Optional, false) {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", r.Key, pod.Namespace, r.Name)
			}
			set(e.Name, v)
		case vf.FieldRef != nil:
			v, err := fieldValue(pod, vf.FieldRef.FieldPath)
			if err != nil {
				return nil, err
			}
			set(e.Name, v)
		case vf.ResourceFieldRef != nil:
			set(e.Name, resourceValue(c, vf.ResourceFieldRef))
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

func fieldValue(pod *corev1.Pod, path string) (string, error) {
	sub := func(prefix string, m map[string]string) (string, bool) {
		if strings.HasPrefix(path, prefix+"['") && strings.HasSuffix(path, "']") {
			return m[path[len(prefix)+2:len(path)-2]], true
		}
		return "", false
	}
	if v, ok := sub("metadata.labels", pod.Labels); ok {
		return v, nil
	}
	if v, ok := sub("metadata.annotations", pod.Annotations); ok {
		return v, nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels", "metadata.annotations":
		m := pod.Labels
		if path == "metadata.annotations" {
			m = pod.Annotations
		}
		var b strings.Builder
		for k, v := range m {
			fmt.Fprintf(&b, "%s=%q\n", k, v)
		}
		return b.String(), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.hostIP", "status.podIPs", "status.hostIPs":
		return "127.0.0.1", nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

func resourceValue(c *corev1.Container, r *corev1.ResourceFieldSelector) string {
	parts := strings.SplitN(r.Resource, ".", 2)
	if len(parts) != 2 {
		return "0"
	}
	list := c.Resources.Limits
	if parts[0] == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(parts[1])]
	if !ok {
		return "0"
	}
	div := r.Divisor
	if div.IsZero() {
		if parts[1] == "cpu" {
			return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / 1000)))
		}
		return fmt.Sprint(q.Value())
	}
	return fmt.Sprint(int64(math.Ceil(q.AsApproximateFloat64() / div.AsApproximateFloat64())))
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		if k, v, ok := strings.Cut(e, "="); ok {
			m[k] = v
		}
	}
	return m
}

// expand replaces $(VAR) by its value when VAR is defined; $$ escapes $.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte(s[i])
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
