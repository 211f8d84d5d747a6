package main

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "NS": "prod"}
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "x",
		"--host $(NS)/y": "--host prod/y",
		"$(MISSING)":     "$(MISSING)",
		"$$(A)":          "$(A)",
		"cost $5":        "cost $5",
		"$(A":            "$(A",
		"$(A)$(A)":       "xx",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTailLines(t *testing.T) {
	in := []byte("a\nb\nc\n")
	if got := string(tailLines(in, 2)); got != "b\nc\n" {
		t.Errorf("tail 2 = %q", got)
	}
	if got := string(tailLines(in, 10)); got != "a\nb\nc\n" {
		t.Errorf("tail 10 = %q", got)
	}
	if got := tailLines(in, 0); len(got) != 0 {
		t.Errorf("tail 0 = %q", got)
	}
}

func TestParts(t *testing.T) {
	ns, pod, uid, c, ok := parts("/exec/default/p/main")
	if !ok || ns != "default" || pod != "p" || uid != "" || c != "main" {
		t.Errorf("4 parts: %v %v %v %v %v", ns, pod, uid, c, ok)
	}
	ns, pod, uid, c, ok = parts("/exec/default/p/1234/main")
	if !ok || ns != "default" || pod != "p" || uid != "1234" || c != "main" {
		t.Errorf("5 parts: %v %v %v %v %v", ns, pod, uid, c, ok)
	}
	if _, _, _, _, ok := parts("/exec/default"); ok {
		t.Error("short path accepted")
	}
}

func TestFieldValue(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", Labels: map[string]string{"app": "db"}},
		Spec:       corev1.PodSpec{NodeName: "local-node", ServiceAccountName: "sa"},
	}
	for path, want := range map[string]string{
		"metadata.name": "p", "metadata.namespace": "ns", "metadata.uid": "u",
		"spec.nodeName": "local-node", "spec.serviceAccountName": "sa",
		"status.podIP": "127.0.0.1", "metadata.labels['app']": "db",
	} {
		if got, err := fieldValue(pod, path); err != nil || got != want {
			t.Errorf("fieldValue(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := fieldValue(pod, "spec.nope"); err == nil {
		t.Error("unknown field accepted")
	}
}
