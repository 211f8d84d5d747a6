# The local cluster's PKI (openssl, EC P-256, in $PKI): one cluster CA that signs the API
# server's serving certificate, the client certificates of the admin, the controller manager,
# the scheduler and each kubelet, the kubelets' serving certificates, and the service-account
# signing key. Sourced by scripts/cluster.

# cert NAME CN O SANS USAGE: a certificate signed by the cluster CA, made once
cert() {
  local name="$1" cn="$2" o="$3" sans="$4" usage="$5"
  [[ -s "$PKI/$name.crt" ]] && return 0
  local subj="/CN=$cn"; [[ -n "$o" ]] && subj="/O=$o$subj"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# kubeconfig FILE USER: a kubeconfig for USER's client certificate
kubeconfig() {
  local file="$1" user="$2"
  [[ -s "$file" ]] && return 0
  cat >"$file" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: baas-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$user.crt")
    client-key-data: $(base64 -w0 <"$PKI/$user.key")
contexts:
- name: baas-local
  context: {cluster: baas-local, user: $user}
current-context: baas-local
KCFG
  chmod 600 "$file"
}

gen_pki() {
  mkdir -p "$PKI"
  (
    umask 077
    if [[ ! -s "$PKI/ca.crt" ]]; then
      openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key"
      openssl req -x509 -new -key "$PKI/ca.key" -sha256 -days 3650 -subj "/CN=baas-local-cluster-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$PKI/ca.crt" 2>/dev/null
    fi
    # pods reach the API server at the kubernetes Service IP (forwarded on the bridge)
    cert apiserver kube-apiserver "" \
      "IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
    cert admin kubernetes-admin system:masters "" clientAuth
    cert kube-controller-manager system:kube-controller-manager "" "" clientAuth
    cert kube-scheduler system:kube-scheduler "" "" clientAuth
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
    local node
    for node in $(node_names); do
      # the API server reaches each kubelet (logs, exec) at its node IP
      cert "kubelet-$node" "$node" "" "IP:$(node_ip "$node"),DNS:$node" serverAuth
      cert "node-$node" "system:node:$node" system:nodes "" clientAuth
    done
    if [[ ! -s "$PKI/sa.key" ]]; then
      openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key"
      openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    fi
    rm -f "$PKI/ca.srl"
  )
  chmod 644 "$PKI"/*.crt
  kubeconfig "$KUBECONFIG_FILE" admin
  kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager
  kubeconfig "$STATE/kube-scheduler.kubeconfig" kube-scheduler
  for node in $(node_names); do kubeconfig "$STATE/node-$node.kubeconfig" "node-$node"; done
  # the webhook's serving certificate has a dev CA of its own, as it would in production
  [[ -s "$STATE/webhook/tls.crt" ]] || "$REPO/certs/dev-certs.sh" "$STATE/webhook" 2>/dev/null
}
