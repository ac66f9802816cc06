#!/usr/bin/env python3
"""Writes an OCI image layout tarball from local files, without a registry.

The image has one uncompressed layer and is named through the index annotations
that `ctr images import` reads, so `ctr -n k8s.io images import` makes it
available to the kubelet under that name. Output is reproducible: entries are
sorted and carry fixed owners and times.

Example:
  ociimage.py --name podrestore.local/busybox:1 --out busybox.tar \
      --add /bin/busybox:/bin/busybox --symlink /bin/sh:busybox --cmd /bin/sh
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _info(path, kind, mode, size=0, target=""):
    ti = tarfile.TarInfo(path.lstrip("/"))
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.linkname = target
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = 0
    return ti


def build_layer(adds, symlinks, dirs):
    """Returns the layer tar bytes for the given (src, dest) files, (dest, target)
    symlinks and directories; parent directories are created as needed."""
    entries = {}

    def parents(dest):
        parts = dest.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            entries.setdefault(d, ("dir", None))

    for d in dirs:
        parents(d + "/x")
        entries[d.rstrip("/") or "/"] = ("dir", None)
    for src, dest in adds:
        parents(dest)
        entries[dest] = ("file", src)
    for dest, target in symlinks:
        parents(dest)
        entries[dest] = ("symlink", target)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dest in sorted(entries):
            kind, arg = entries[dest]
            if kind == "dir":
                mode = 0o1777 if dest == "/tmp" else 0o755
                tar.addfile(_info(dest, tarfile.DIRTYPE, mode))
            elif kind == "symlink":
                tar.addfile(_info(dest, tarfile.SYMTYPE, 0o777, target=arg))
            else:
                st = os.stat(arg)
                with open(arg, "rb") as f:
                    tar.addfile(_info(dest, tarfile.REGTYPE, st.st_mode & 0o7777, st.st_size), f)
    return buf.getvalue()


def _blob(blobs, data, media):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media, "digest": digest, "size": len(data)}


def _json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_image(name, layer, entrypoint=None, cmd=None, env=None, workdir=None):
    """Returns the OCI layout tarball bytes of a single-layer linux/amd64 image."""
    blobs = {}
    layer_desc = _blob(blobs, layer, MEDIA_LAYER)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env or ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created_by": "ociimage.py"}],
    }
    if entrypoint:
        config["config"]["Entrypoint"] = entrypoint
    if cmd:
        config["config"]["Cmd"] = cmd
    if workdir:
        config["config"]["WorkingDir"] = workdir
    config_desc = _blob(blobs, _json(config), MEDIA_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc, "layers": [layer_desc]}
    manifest_desc = _blob(blobs, _json(manifest), MEDIA_MANIFEST)
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    # containerd names the imported image after io.containerd.image.name; the
    # OCI annotation carries the tag for other tools.
    last = name.rsplit("/", 1)[-1]
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": last.split(":", 1)[1] if ":" in last else "latest",
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}

    files = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}), "index.json": _json(index)}
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest.split(":", 1)[1]] = data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_info(d, tarfile.DIRTYPE, 0o755))
        for path in sorted(files):
            data = files[path]
            tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _pair(s):
    if ":" not in s:
        raise argparse.ArgumentTypeError(f"expected A:B, got {s!r}")
    return tuple(s.split(":", 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="image reference, e.g. podrestore.local/pause:1")
    p.add_argument("--out", required=True, help="path of the OCI layout tarball to write")
    p.add_argument("--add", action="append", type=_pair, default=[], metavar="SRC:DEST", help="copy a file")
    p.add_argument("--symlink", action="append", type=_pair, default=[], metavar="DEST:TARGET")
    p.add_argument("--dir", action="append", default=[], metavar="DEST", help="create a directory")
    p.add_argument("--entrypoint", nargs="+")
    p.add_argument("--cmd", nargs="+")
    p.add_argument("--env", action="append", metavar="K=V")
    p.add_argument("--workdir")
    a = p.parse_args(argv)
    layer = build_layer(a.add, a.symlink, a.dir)
    image = build_image(a.name, layer, a.entrypoint, a.cmd, a.env, a.workdir)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(image)
    os.replace(tmp, a.out)
    print(f"wrote {a.out} ({a.name}, {len(image)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
