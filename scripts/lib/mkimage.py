#!/usr/bin/env python3
"""Builds an OCI image layout for the demo and the benchmarks, from the host's own files.

  mkimage.py OUT --busybox                         one layer: busybox and its applets
  mkimage.py OUT --files ROOT[:ROOT...] --mb N --layers K
                                                   N MB of host files split over K layers
  mkimage.py OUT --dirs DIR[:DIR...]               one layer per directory (bottom first),
                                                   owned by root, streamed (any size)

Layers are gzip level 6 (docker's default); each is also left as OUT-layerI.tar.gz so that
benchmarks can time a plain `gzip -dc` of the same bytes. Push with
`skopeo copy oci:OUT:latest docker://...`.
"""
import argparse, gzip, hashlib, io, json, os, tarfile


def put(root, data):
    h = hashlib.sha256(data).hexdigest()
    with open(f"{root}/blobs/sha256/{h}", "wb") as f:
        f.write(data)
    return "sha256:" + h


def busybox_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, mode
            t.addfile(ti)
        t.add("/usr/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "ls", "cat", "echo", "id", "uname", "hostname", "ps", "true"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(ti)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        ti = tarfile.TarInfo("etc/passwd")
        ti.size, ti.mode = len(passwd), 0o644
        t.addfile(ti, io.BytesIO(passwd))
    return [buf.getvalue()]


def host_tars(roots, limit, layers):
    files, total = [], 0
    for root in roots:
        for d, dirs, names in os.walk(root):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(d, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                s = os.path.getsize(p)
                if s == 0 or s > 8 << 20:
                    continue
                files.append(p)
                total += s
                if total >= limit:
                    break
            if total >= limit:
                break
        if total >= limit:
            break
    tars = []
    for i in range(layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for p in files[i::layers]:
                t.add(p, arcname=p.lstrip("/"))
        tars.append(buf.getvalue())
    return tars


class Hashing:
    """A file that hashes what is written to it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def dir_layers(out, dirs):
    """Streams each directory into a gzip'd tar blob; returns (layer descriptors, diff_ids)."""
    layers, diffs = [], []
    for i, d in enumerate(dirs):
        tmp = f"{out}/blobs/sha256/tmp-{i}"
        with open(tmp, "wb") as raw_f:
            gz_hash = Hashing(raw_f)
            with gzip.GzipFile(fileobj=gz_hash, mode="wb", compresslevel=1, mtime=0) as gz:
                tar_hash = Hashing(gz)
                with tarfile.open(fileobj=tar_hash, mode="w|", format=tarfile.PAX_FORMAT) as t:
                    def root(ti):
                        ti.uid = ti.gid = 0
                        ti.uname = ti.gname = ""
                        return ti
                    for name in sorted(os.listdir(d)):
                        t.add(os.path.join(d, name), arcname=name, filter=root)
        digest = gz_hash.h.hexdigest()
        os.rename(tmp, f"{out}/blobs/sha256/{digest}")
        diffs.append("sha256:" + tar_hash.h.hexdigest())
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": "sha256:" + digest, "size": gz_hash.n})
    return layers, diffs


def main():
    a = argparse.ArgumentParser()
    a.add_argument("out")
    a.add_argument("--busybox", action="store_true")
    a.add_argument("--files")
    a.add_argument("--dirs")
    a.add_argument("--mb", type=int, default=100)
    a.add_argument("--layers", type=int, default=1)
    o = a.parse_args()
    os.makedirs(f"{o.out}/blobs/sha256", exist_ok=True)
    if o.dirs:
        tars = []
        layers, diffs = dir_layers(o.out, o.dirs.split(":"))
    else:
        tars = busybox_tar() if o.busybox else host_tars(o.files.split(":"), o.mb << 20, o.layers)
        layers, diffs = [], []
    for i, raw in enumerate(tars):
        gz = gzip.compress(raw, 6)
        with open(f"{o.out}-layer{i}.tar.gz", "wb") as f:
            f.write(gz)
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(o.out, gz), "size": len(gz)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
                      "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diffs},
                      # One step per layer, as real images have (buildah refuses a base without).
                      "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"mkimage.py layer {i}"}
                                  for i in range(len(diffs))]}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(o.out, cfg), "size": len(cfg)},
                           "layers": layers}).encode()
    md = put(o.out, manifest)
    with open(f"{o.out}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                   "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    with open(f"{o.out}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print(f"{os.path.basename(o.out)}: {len(layers)} layer(s), {sum(l['size'] for l in layers) / 1e6:.1f} MB compressed")


if __name__ == "__main__":
    main()
