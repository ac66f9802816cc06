"""Tests of ociimage.py: layout, digests and reproducibility of the tarballs."""

import hashlib
import io
import json
import os
import tarfile
import tempfile
import unittest

import ociimage


def _members(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


class OciImageTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.bin = os.path.join(self.tmp.name, "tool")
        with open(self.bin, "wb") as f:
            f.write(b"\x7fELF fake")
        os.chmod(self.bin, 0o755)

    def tearDown(self):
        self.tmp.cleanup()

    def build(self):
        layer = ociimage.build_layer([(self.bin, "/bin/tool")], [("/bin/sh", "tool")], ["/tmp"])
        return layer, ociimage.build_image("podrestore.local/tool:1", layer, entrypoint=["/bin/tool"])

    def test_layer_holds_files_parents_and_symlinks(self):
        layer, _ = self.build()
        m = _members(layer)
        self.assertEqual(sorted(m), ["bin", "bin/sh", "bin/tool", "tmp"])
        self.assertEqual(m["bin/tool"][1], b"\x7fELF fake")
        self.assertEqual(m["bin/tool"][0].mode, 0o755)
        self.assertEqual(m["bin/sh"][0].linkname, "tool")
        self.assertEqual(m["tmp"][0].mode, 0o1777)

    def test_layout_digests_and_name(self):
        layer, image = self.build()
        m = _members(image)
        index = json.loads(m["index.json"][1])
        desc = index["manifests"][0]
        self.assertEqual(desc["annotations"]["io.containerd.image.name"], "podrestore.local/tool:1")
        self.assertEqual(desc["annotations"]["org.opencontainers.image.ref.name"], "1")

        def blob(d):
            data = m["blobs/sha256/" + d["digest"].split(":")[1]][1]
            self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), d["digest"])
            self.assertEqual(len(data), d["size"])
            return data

        manifest = json.loads(blob(desc))
        config = json.loads(blob(manifest["config"]))
        self.assertEqual(blob(manifest["layers"][0]), layer)
        self.assertEqual(config["rootfs"]["diff_ids"], [manifest["layers"][0]["digest"]])
        self.assertEqual(config["config"]["Entrypoint"], ["/bin/tool"])

    def test_reproducible(self):
        self.assertEqual(self.build()[1], self.build()[1])

    def test_cli_writes_tarball(self):
        out = os.path.join(self.tmp.name, "img.tar")
        ociimage.main(["--name", "x/y:2", "--out", out, "--add", f"{self.bin}:/t", "--cmd", "/t", "a"])
        index = json.loads(_members(open(out, "rb").read())["index.json"][1])
        self.assertEqual(index["manifests"][0]["annotations"]["io.containerd.image.name"], "x/y:2")


if __name__ == "__main__":
    unittest.main()
