#!/usr/bin/env bash
# Creates a development CA and a webhook serving certificate with openssl.
#
#   certs/dev-certs.sh OUTDIR [EXTRA_DNS_NAME...]
#
# OUTDIR gets ca.crt, ca.key, tls.crt, tls.key. The serving certificate is
# valid for 127.0.0.1, localhost and the webhook Service
# (${BAAS_WEBHOOK_SERVICE:-baas-webhook}.${BAAS_WEBHOOK_NAMESPACE:-baas-system}.svc
# and .svc.cluster.local), plus any extra names given. An existing CA in
# OUTDIR is reused, so a caBundle that was registered stays valid.
# Keys are secrets: never commit them (certs/.gitignore ignores them here).
set -euo pipefail

out="${1:?usage: certs/dev-certs.sh OUTDIR [EXTRA_DNS_NAME...]}"
shift
svc="${BAAS_WEBHOOK_SERVICE:-baas-webhook}"
ns="${BAAS_WEBHOOK_NAMESPACE:-baas-system}"
days="${BAAS_CERT_DAYS:-825}"
mkdir -p "$out"
umask 077

if [[ ! -s "$out/ca.key" || ! -s "$out/ca.crt" ]]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 -subj "/CN=baas-dev-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt" 2>/dev/null
fi

sans="IP:127.0.0.1,DNS:localhost,DNS:$svc,DNS:$svc.$ns,DNS:$svc.$ns.svc,DNS:$svc.$ns.svc.cluster.local"
for n in "$@"; do sans+=",DNS:$n"; done

openssl ecparam -name prime256v1 -genkey -noout -out "$out/tls.key"
openssl req -new -key "$out/tls.key" -subj "/CN=$svc.$ns.svc" -out "$out/tls.csr" 2>/dev/null
cat >"$out/tls.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans
EXT
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$out/tls.ext" -out "$out/tls.crt" 2>/dev/null
rm -f "$out/tls.csr" "$out/tls.ext" "$out/ca.srl"
chmod 644 "$out/ca.crt" "$out/tls.crt"
echo "$out/tls.crt (SANs: $sans), CA: $out/ca.crt" >&2
