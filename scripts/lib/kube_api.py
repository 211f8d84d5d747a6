#!/usr/bin/env python3
"""Bulk calls to the Kubernetes API for the benchmarks, over persistent connections from 16
threads: one kubectl call per object takes longer than a minute at thousands of objects.

  kube_api.py fail-jobs SELECTOR          mark every unfinished Job matching SELECTOR Failed
  kube_api.py delete-all PATH NS...       DELETE the collection PATH ({ns} filled in) per namespace
  kube_api.py strip-finalizers PATH       remove the finalizers of every object of PATH (all namespaces)
  kube_api.py count PATH                  the number of objects a LIST of PATH returns
  kube_api.py fill-history PATH PREFIX N  copies of the newest finished run of PATH of each Schedule
                                          in the namespaces named PREFIX*, until each has N

Uses the admin kubeconfig ($KUBECONFIG, with a client certificate, as scripts/cluster writes
it). A podless Job (the benchmarks' quota allows no pods) never ends by itself:
fail-jobs ends it as the Job controller would, FailureTarget then Failed, so that every
operator sees its run end through the Job's status, the path a real failed backup takes.
"""
import base64
import datetime
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse

CLIENTS = 16


def connect_factory():
    # kubectl turns the kubeconfig into JSON, which needs no YAML parser here
    text = subprocess.run(["kubectl", "config", "view", "--raw", "-o", "json"], check=True,
                          capture_output=True, text=True).stdout
    config = json.loads(text)
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    tmp = tempfile.mkdtemp()

    def keep(name, data):
        path = os.path.join(tmp, name)
        with open(path, "wb") as out:
            out.write(base64.b64decode(data))
        return path

    if "certificate-authority-data" in cluster:
        ca = keep("ca", cluster["certificate-authority-data"])
    else:
        ca = cluster["certificate-authority"]
    context = ssl.create_default_context(cafile=ca)
    if "client-certificate-data" in user:
        context.load_cert_chain(keep("crt", user["client-certificate-data"]), keep("key", user["client-key-data"]))
    else:
        context.load_cert_chain(user["client-certificate"], user["client-key"])
    url = urllib.parse.urlparse(cluster["server"])
    return lambda: http.client.HTTPSConnection(url.hostname, url.port or 443, context=context)


CONNECT = connect_factory()
HEADERS = {"User-Agent": "bench-client"}


def call(connection, method, path, body=None, content_type="application/json"):
    headers = dict(HEADERS)
    if body is not None:
        headers["Content-Type"] = content_type
        body = json.dumps(body)
    connection.request(method, path, body, headers)
    response = connection.getresponse()
    data = response.read()
    return response.status, data


def list_all(path):
    connection = CONNECT()
    items, token = [], ""
    while True:
        sep = "&" if "?" in path else "?"
        status, data = call(connection, "GET", f"{path}{sep}limit=500" + (f"&continue={token}" if token else ""))
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {data[:200]!r}")
        page = json.loads(data)
        items += page.get("items", [])
        token = page.get("metadata", {}).get("continue", "")
        if not token:
            return items


def parallel(work, fn):
    failed = []

    def client(c):
        connection = CONNECT()
        for item in work[c::CLIENTS]:
            status, data = fn(connection, item)
            if status >= 300 and status != 404:
                failed.append((status, data[:200]))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status, data in failed[:3]:
        print(f"kube_api: {status} {data!r}", file=sys.stderr)
    return len(failed)


def fail_jobs(selector):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    jobs = list_all("/apis/batch/v1/jobs?labelSelector=" + urllib.parse.quote(selector))
    terminal = {"Complete", "Failed"}
    todo = [
        j
        for j in jobs
        if not any(c["type"] in terminal and c["status"] == "True" for c in j.get("status", {}).get("conditions", []))
    ]

    def patch(connection, job):
        meta = job["metadata"]
        path = f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}/status"
        condition = {"status": "True", "reason": "BenchmarkEnded", "message": "ended by the benchmark",
                     "lastProbeTime": now, "lastTransitionTime": now}
        status = {"conditions": [dict(condition, type="FailureTarget"), dict(condition, type="Failed")]}
        # a finished Job needs a startTime, which is immutable once the Job controller set it
        if not job.get("status", {}).get("startTime"):
            status["startTime"] = now
        code, data = call(connection, "PATCH", path, {"status": status}, "application/merge-patch+json")
        if code == 422 and "startTime" in status:  # the Job controller set it since the LIST
            del status["startTime"]
            code, data = call(connection, "PATCH", path, {"status": status}, "application/merge-patch+json")
        return code, data

    failed = parallel(todo, patch)
    print(f"{len(todo) - failed} of {len(todo)} unfinished Jobs marked Failed")


def delete_all(path, namespaces):
    failed = parallel(namespaces, lambda c, ns: call(c, "DELETE", path.replace("{ns}", ns)))
    if failed:
        raise SystemExit(f"{failed} deletes failed")


def strip_finalizers(path):
    objects = [o for o in list_all(path) if o["metadata"].get("finalizers")]

    def strip(connection, o):
        meta = o["metadata"]
        item = path.split("?")[0].rstrip("/").split("/")[-1]
        prefix = path.split("?")[0].rsplit("/", 1)[0]
        return call(connection, "PATCH", f"{prefix}/namespaces/{meta['namespace']}/{item}/{meta['name']}",
                    {"metadata": {"finalizers": None}}, "application/merge-patch+json")

    parallel(objects, strip)


FINISHED = {"Succeeded", "PartiallySucceeded", "Failed"}
TICK = "backup.appuio.ch/tick"


def fill_history(path, prefix, history):
    """A full history without waiting a tick per run: each copy carries the Schedule's owner
    reference, its run labels and a tick a minute before the one before, and its status is the
    finished status of the run it copies, so the operator sees it as one more finished run."""
    owned = {}
    for run in list_all(path):
        meta = run["metadata"]
        owner = next((o["uid"] for o in meta.get("ownerReferences", []) if o["kind"] == "Schedule"), None)
        if meta["namespace"].startswith(prefix) and owner and run.get("status", {}).get("state") in FINISHED:
            owned.setdefault(owner, []).append(run)
    work = []
    for runs in owned.values():
        newest = max(runs, key=lambda r: r["metadata"]["creationTimestamp"])
        work += [(newest, i) for i in range(1, history - len(runs) + 1)]

    def copy(connection, item):
        run, i = item
        meta = run["metadata"]
        annotations = dict(meta.get("annotations", {}))
        if TICK in annotations:
            tick = datetime.datetime.fromisoformat(annotations[TICK].replace("Z", "+00:00"))
            annotations[TICK] = (tick - datetime.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"apiVersion": run["apiVersion"], "kind": run["kind"], "spec": run.get("spec", {}),
                "metadata": {"name": f"{meta['name']}-copy{i}", "labels": meta.get("labels", {}),
                             "annotations": annotations, "ownerReferences": meta["ownerReferences"]}}
        group, plural = path.split("?")[0].rstrip("/").rsplit("/", 1)
        collection = f"{group}/namespaces/{meta['namespace']}/{plural}"
        code, data = call(connection, "POST", collection, body)
        if code >= 300:
            return code, data
        created = json.loads(data)
        created["status"] = run["status"]
        return call(connection, "PUT", f"{collection}/{created['metadata']['name']}/status", created)

    failed = parallel(work, copy)
    print(f"{len(work) - failed} of {len(work)} finished runs copied for {len(owned)} Schedules")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "fail-jobs":
        fail_jobs(args[0])
    elif command == "delete-all":
        delete_all(args[0], args[1:])
    elif command == "strip-finalizers":
        strip_finalizers(args[0])
    elif command == "fill-history":
        fill_history(args[0], args[1], int(args[2]))
    elif command == "count":
        print(len(list_all(args[0])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
