#!/usr/bin/env python3
"""Builds an OCI image layout for the demo and the benchmarks, from the host's own files.

  mkimage.py OUT --busybox                         one layer: busybox and its applets
  mkimage.py OUT --files ROOT[:ROOT...] --mb N --layers K
                                                   N MB of host files split over K layers

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


def main():
    a = argparse.ArgumentParser()
    a.add_argument("out")
    a.add_argument("--busybox", action="store_true")
    a.add_argument("--files")
    a.add_argument("--mb", type=int, default=100)
    a.add_argument("--layers", type=int, default=1)
    o = a.parse_args()
    tars = busybox_tar() if o.busybox else host_tars(o.files.split(":"), o.mb << 20, o.layers)
    os.makedirs(f"{o.out}/blobs/sha256", exist_ok=True)
    layers, diffs = [], []
    for i, raw in enumerate(tars):
        gz = gzip.compress(raw, 6)
        with open(f"{o.out}-layer{i}.tar.gz", "wb") as f:
            f.write(gz)
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(o.out, gz), "size": len(gz)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
                      "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(o.out, cfg), "size": len(cfg)},
                           "layers": layers}).encode()
    md = put(o.out, manifest)
    with open(f"{o.out}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                   "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    with open(f"{o.out}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print(f"{os.path.basename(o.out)}: {len(tars)} layer(s), {sum(l['size'] for l in layers) / 1e6:.1f} MB compressed")


if __name__ == "__main__":
    main()
