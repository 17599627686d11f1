"""netkit download_model / download_model_from_gist against a loopback HTTP server that
supports Range requests, can drop the connection halfway, and can ignore Range."""
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from netkit.errors import NetkitError
from netkit.zoo import download_gist, download_model, parse_frontmatter, read_model_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes
SHA1 = hashlib.sha1(MODEL).hexdigest()


class Server:
    """Serves `files` (path -> bytes). mode: 'normal' (honours Range), 'drop' (sends half
    the body then closes the connection), 'norange' (answers 200 with the whole file)."""

    def __init__(self):
        self.files, self.mode, self.requests = {}, "normal", []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                range_header = self.headers.get("Range")
                state.requests.append((self.path, range_header))
                body = state.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.match(r"^bytes=(\d+)-$", range_header or "")
                if match and state.mode != "norange":
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if state.mode == "drop":
                    self.wfile.write(payload[:len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def paths(self):
        return [path for path, _ in self.requests]


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def model_dir(tmp_path, url, sha1=SHA1, name="tiny.caffemodel"):
    d = tmp_path / "tiny_model"
    d.mkdir()
    (d / "readme.md").write_text(
        "---\nname: \"Tiny: a test model\"\ncaffemodel: %s\ncaffemodel_url: %s\n"
        "license: unrestricted  # any use\nsha1: '%s'\n---\n\nA model for tests.\n"
        % (name, url, sha1))
    return d


def netkit(*args, env=None):
    return subprocess.run([sys.executable, "-m", "netkit.tools.cli"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def one_line_error(result):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("netkit: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


def run(d, **kwargs):
    out = io.StringIO()
    download_model(str(d), out=out, **kwargs)
    return out.getvalue()


# ---- readme.md front matter ----

def test_frontmatter_fields_quotes_and_comments():
    text = ("# title\n---\nname: 'It''s a \"net\"'\ncaffemodel: m.caffemodel   # the file\n"
            "caffemodel_url: \"http://h/m.caffemodel#x\"\nsha1: ABC\nextra:\n  - nested\n---\n"
            "key: not front matter\n")
    assert parse_frontmatter(text) == {
        "name": "It's a \"net\"", "caffemodel": "m.caffemodel",
        "caffemodel_url": "http://h/m.caffemodel#x", "sha1": "ABC", "extra": ""}


@pytest.mark.parametrize("body,message", [
    ("no front matter\n", "no front matter"),
    ("---\nname: x\nthis is not a field\n---\n", "readme.md:3: expected 'key: value'"),
    ("---\nname: 'open\n---\n", "unterminated quoted value"),
    ("---\nsha1: %s\n---\n" % SHA1, "no 'caffemodel' field"),
    ("---\ncaffemodel: ../m.caffemodel\nsha1: %s\n---\n" % SHA1, "plain file name"),
    ("---\ncaffemodel: m.caffemodel\nsha1: 1234\n---\n", "not 40 hexadecimal digits"),
])
def test_bad_readme_is_a_one_line_error(tmp_path, body, message):
    (tmp_path / "readme.md").write_text(body)
    with pytest.raises(NetkitError, match=re.escape(message)):
        read_model_info(str(tmp_path))


# ---- download_model ----

def test_download_lands_verified_then_is_not_fetched_again(tmp_path, server):
    server.files["/m/tiny.caffemodel"] = MODEL
    d = model_dir(tmp_path, server.url + "/m/tiny.caffemodel")
    first = netkit("download_model", str(d))
    assert first.returncode == 0, first.stderr
    assert (d / "tiny.caffemodel").read_bytes() == MODEL
    assert not (d / "tiny.caffemodel.part").exists()
    assert "100%, 1 MB" in first.stderr
    assert server.requests == [("/m/tiny.caffemodel", None)]

    again = netkit("download_model", str(d))
    assert again.returncode == 0, again.stderr
    assert "Model already exists." in again.stdout
    assert len(server.requests) == 1


def test_sha1_mismatch_is_refused_and_leaves_nothing(tmp_path, server):
    server.files["/tiny.caffemodel"] = MODEL
    wrong = "0" * 40
    d = model_dir(tmp_path, server.url + "/tiny.caffemodel", sha1=wrong)
    line = one_line_error(netkit("download_model", str(d)))
    assert line == "netkit: error: %s: SHA-1 mismatch (expected %s, got %s)" % (
        d / "tiny.caffemodel", wrong, SHA1)
    assert sorted(os.listdir(d)) == ["readme.md"]


def test_interrupted_download_is_resumed_with_range(tmp_path, server):
    server.files["/tiny.caffemodel"] = MODEL
    d = model_dir(tmp_path, server.url + "/tiny.caffemodel")
    server.mode = "drop"
    with pytest.raises(NetkitError, match="interrupted.*run again to resume"):
        run(d)
    part = d / "tiny.caffemodel.part"
    kept = part.read_bytes()
    assert 0 < len(kept) < len(MODEL) and MODEL.startswith(kept)
    assert not (d / "tiny.caffemodel").exists()

    server.mode = "normal"
    run(d)
    assert server.requests[-1] == ("/tiny.caffemodel", "bytes=%d-" % len(kept))
    assert (d / "tiny.caffemodel").read_bytes() == MODEL
    assert not part.exists()


def test_readme_without_sha1_downloads_unverified_and_says_so(tmp_path, server):
    """VGG's and MobileNet's zoo entries published no SHA-1: fetch, warn, keep the file."""
    server.files["/tiny.caffemodel"] = MODEL
    d = model_dir(tmp_path, server.url + "/tiny.caffemodel")
    readme = d / "readme.md"
    readme.write_text("\n".join(line for line in readme.read_text().splitlines()
                                if not line.startswith("sha1")))
    said = io.StringIO()
    download_model(str(d), out=said)
    assert "gives no sha1; the download cannot be verified" in said.getvalue()
    assert (d / "tiny.caffemodel").read_bytes() == MODEL
    again = io.StringIO()
    download_model(str(d), out=again)
    assert "Model already exists (" in again.getvalue() and len(server.requests) == 1


def test_server_ignoring_range_restarts_from_zero(tmp_path, server):
    server.files["/tiny.caffemodel"] = MODEL
    d = model_dir(tmp_path, server.url + "/tiny.caffemodel")
    (d / "tiny.caffemodel.part").write_bytes(b"x" * 1000)
    server.mode = "norange"
    run(d)
    assert server.requests == [("/tiny.caffemodel", "bytes=1000-")]
    assert (d / "tiny.caffemodel").read_bytes() == MODEL


def test_part_longer_than_the_file_is_discarded(tmp_path, server):
    server.files["/tiny.caffemodel"] = MODEL
    d = model_dir(tmp_path, server.url + "/tiny.caffemodel")
    (d / "tiny.caffemodel.part").write_bytes(MODEL + b"junk")
    run(d)
    assert [r for _, r in server.requests] == ["bytes=%d-" % (len(MODEL) + 4), None]
    assert (d / "tiny.caffemodel").read_bytes() == MODEL


def test_complete_part_is_installed_without_the_network(tmp_path, server):
    d = model_dir(tmp_path, server.url + "/tiny.caffemodel")
    (d / "tiny.caffemodel.part").write_bytes(MODEL)
    (d / "tiny.caffemodel").write_bytes(b"an older, wrong file")
    run(d)
    assert server.requests == []
    assert (d / "tiny.caffemodel").read_bytes() == MODEL


def test_mirror_env_and_url_option(tmp_path, server):
    server.files["/mirror/tiny.caffemodel"] = MODEL
    server.files["/elsewhere.bin"] = MODEL
    d = model_dir(tmp_path, server.url + "/gone/tiny.caffemodel")
    result = netkit("download_model", str(d), env={"NETKIT_MODEL_MIRROR": server.url + "/mirror/"})
    assert result.returncode == 0, result.stderr
    assert server.paths() == ["/mirror/tiny.caffemodel"]
    assert (d / "tiny.caffemodel").read_bytes() == MODEL

    os.unlink(d / "tiny.caffemodel")
    run(d, url=server.url + "/elsewhere.bin")
    assert server.paths()[-1] == "/elsewhere.bin"
    assert (d / "tiny.caffemodel").read_bytes() == MODEL


def test_http_error_is_one_line(tmp_path, server):
    d = model_dir(tmp_path, server.url + "/missing.caffemodel")
    line = one_line_error(netkit("download_model", str(d)))
    assert line == "netkit: error: %s/missing.caffemodel: HTTP 404 Not Found" % server.url
    assert sorted(os.listdir(d)) == ["readme.md"]


# ---- download_model_from_gist ----

def serve_gist(server, gist, files):
    server.files["/gists/" + gist] = json.dumps({"id": gist, "files": files}).encode()


def test_gist_files_are_written(tmp_path, server, monkeypatch):
    monkeypatch.setenv("NETKIT_GIST_API", server.url)
    server.files["/raw/deploy.prototxt"] = b'name: "big"\n'
    serve_gist(server, "abc123", {
        "readme.md": {"content": "---\nname: gist model\n---\n", "truncated": False},
        "deploy.prototxt": {"content": "name: \"cut", "truncated": True,
                            "raw_url": server.url + "/raw/deploy.prototxt"}})
    out = io.StringIO()
    model = download_gist("someone/abc123", str(tmp_path / "models"), out=out)
    assert model == str(tmp_path / "models" / "someone-abc123")
    assert sorted(os.listdir(model)) == ["deploy.prototxt", "readme.md"]
    assert (tmp_path / "models" / "someone-abc123" / "readme.md").read_text() \
        == "---\nname: gist model\n---\n"
    assert (tmp_path / "models" / "someone-abc123" / "deploy.prototxt").read_bytes() \
        == b'name: "big"\n'
    assert os.listdir(tmp_path / "models") == ["someone-abc123"]
    with pytest.raises(NetkitError, match="already exists"):
        download_gist("someone/abc123", str(tmp_path / "models"))


@pytest.mark.parametrize("evil", ["../evil", "/abs", "sub/file", "..", "a\\b"])
def test_gist_file_names_escaping_dir_are_refused(tmp_path, server, evil):
    serve_gist(server, "bad1", {"readme.md": {"content": "ok"}, evil: {"content": "pwned"}})
    work = tmp_path / "work"
    work.mkdir()
    result = netkit("download_model_from_gist", "bad1", str(work / "models"),
                    env={"NETKIT_GIST_API": server.url})
    line = one_line_error(result)
    assert "refusing file name '%s'" % evil in line
    assert os.listdir(work) == []
    assert os.listdir(tmp_path) == ["work"]
    assert not os.path.exists("/abs")


@pytest.mark.parametrize("gist", ["../x", "a/b/c", "", "x y"])
def test_bad_gist_id_is_refused(tmp_path, gist):
    with pytest.raises(NetkitError, match="is not a gist id"):
        download_gist(gist, str(tmp_path))
    assert os.listdir(tmp_path) == []
