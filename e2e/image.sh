#!/usr/bin/env bash
# Writes an OCI image archive (an OCI image layout in a tar) without Docker or a registry.
#
#   image.sh --name REF --out FILE.tar [--entrypoint JSON] [--cmd JSON] [--user UID] SPEC...
#   SPEC: bin:SRC:DEST   copy an ELF binary and every shared library `ldd` says it loads
#         file:SRC:DEST  copy a file;  link:DEST:TARGET  a symlink;  dir:DEST  an empty dir
#
# Why a script and not a library: the crates/tools that write OCI layouts (ocidir, crane,
# umoci) would add a build or a download for ~40 lines of tar+sha256+jq. The archive is
# deterministic (sorted entries, fixed mtimes/owners, gzip -n, canonical JSON), so the same
# inputs give the same digest, and it carries the io.containerd.image.name annotation that
# `ctr images import` (and `kind load image-archive`, which runs it) needs to name the image.
#
# Why copy glibc rather than build static: the release binaries link rocksdb/librdkafka/openssl
# through glibc; a musl build would be a second toolchain and a second native build of each. The
# libraries ldd resolves are exactly the ones the binary was linked and tested against.
set -euo pipefail
name="" out="" entrypoint="null" cmd="null" user="65532"
specs=()
while [ $# -gt 0 ]; do
  case $1 in
    --name) name=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --entrypoint) entrypoint=$2; shift 2 ;;
    --cmd) cmd=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    -*) echo "image.sh: unknown flag $1" >&2; exit 2 ;;
    *) specs+=("$1"); shift ;;
  esac
done
if [ -z "$name" ] || [ -z "$out" ] || [ ${#specs[@]} -eq 0 ]; then
  sed -n '2,8p' "$0" >&2; exit 2
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
root=$work/rootfs; mkdir -p "$root"

put() { # SRC DEST MODE: the file's content, never a symlink, so the layer is self-contained
  mkdir -p "$root$(dirname "$2")"
  cp -L "$1" "$root$2"; chmod "$3" "$root$2"
}
for s in "${specs[@]}"; do
  kind=${s%%:*} rest=${s#*:}
  case $kind in
    bin)
      src=${rest%%:*} dest=${rest#*:}
      put "$src" "$dest" 0755
      # ldd lines: "libx.so => /path (0x..)" or "/lib64/ld-linux-x86-64.so.2 (0x..)"; a static
      # binary prints "not a dynamic executable" (exit 1) and needs nothing.
      if libs=$(ldd "$src" 2>/dev/null); then
        if grep -q 'not found' <<<"$libs"; then echo "image.sh: $src: $libs" >&2; exit 1; fi
        while read -r lib; do put "$lib" "$lib" 0755; done < <(
          grep -oE '(=> )?/[^ ]+ \(0x' <<<"$libs" | sed -E 's/^=> //; s/ \(0x$//' | sort -u)
      fi ;;
    file) put "${rest%%:*}" "${rest#*:}" 0644 ;;
    link) mkdir -p "$root$(dirname "${rest%%:*}")"; ln -sfn "${rest#*:}" "$root${rest%%:*}" ;;
    dir) mkdir -p "$root$rest" ;;
    *) echo "image.sh: bad spec $s" >&2; exit 2 ;;
  esac
done
# A passwd/group entry makes the numeric user a named one for tools that look it up; /tmp is
# the one writable place programs commonly expect.
mkdir -p "$root/etc" "$root/tmp"; chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
find "$root" -type d ! -path "$root/tmp" -exec chmod 0755 {} +

blobs=$work/layout/blobs/sha256; mkdir -p "$blobs"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | sed 's,^\./,,' |
  tar --no-recursion -T - --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf -) \
  >"$work/layer.tar"
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 <"$work/layer.tar" >"$work/layer.tgz"
layer=$(sha256sum "$work/layer.tgz" | cut -d' ' -f1); mv "$work/layer.tgz" "$blobs/$layer"

blob() { # writes stdin as a blob, prints its digest and size
  local f=$work/blob d; cat >"$f"; d=$(sha256sum "$f" | cut -d' ' -f1)
  mv "$f" "$blobs/$d"; echo "$d $(stat -c %s "$blobs/$d")"
}
read -r cfg cfg_size < <(jq -cnS --argjson ep "$entrypoint" --argjson cmd "$cmd" \
  --arg user "$user:$user" --arg diff "sha256:$diff_id" '{
    architecture: "amd64", os: "linux", created: "1970-01-01T00:00:00Z",
    config: ({User: $user, Env: ["PATH=/usr/local/bin:/usr/bin:/bin"], WorkingDir: "/"}
      + (if $ep then {Entrypoint: $ep} else {} end) + (if $cmd then {Cmd: $cmd} else {} end)),
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: "eddy e2e/image.sh"}]}' | blob)
read -r man man_size < <(jq -cnS --arg cfg "sha256:$cfg" --argjson cs "$cfg_size" \
  --arg layer "sha256:$layer" --argjson ls "$(stat -c %s "$blobs/$layer")" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cfg, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $layer, size: $ls}]}' | blob)
jq -cnS --arg man "sha256:$man" --argjson ms "$man_size" --arg name "$name" '{
  schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $man, size: $ms,
    platform: {architecture: "amd64", os: "linux"},
    annotations: {"io.containerd.image.name": $name,
      "org.opencontainers.image.ref.name": ($name | sub(".*:"; ""))}}]}' >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$out")"
(cd "$work/layout" && find . -mindepth 1 | LC_ALL=C sort | sed 's,^\./,,' |
  tar --no-recursion -T - --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf -) \
  >"$out.tmp"
mv "$out.tmp" "$out"
echo "image: $name -> $out ($(du -h --apparent-size "$out" | cut -f1), layer $(stat -c %s "$blobs/$layer") bytes gz, digest sha256:$man)" >&2
