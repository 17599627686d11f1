"""The Model Zoo: fetch a trained .caffemodel named by a model directory's readme.md, and a
model directory itself from a GitHub gist (Caffe's scripts/download_model_binary.py and
scripts/download_model_from_gist.sh).

A model directory's readme.md opens with front matter between two `---` lines:

    ---
    name: BVLC AlexNet Model
    caffemodel: bvlc_alexnet.caffemodel
    caffemodel_url: http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel
    sha1: 9116a64c0fbe4459d18f4bb6b56d647b63920377
    license: unrestricted
    ---

Only stdlib is used: the front matter parser reads the flat `key: value` subset of YAML that
model readmes use, and downloads go through urllib.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from .errors import NetkitError

TIMEOUT_S = 60
CHUNK = 1 << 16
PROGRESS_INTERVAL_S = 0.5
MIRROR_ENV = "NETKIT_MODEL_MIRROR"
GIST_API_ENV = "NETKIT_GIST_API"
GIST_API = "https://api.github.com"
REQUIRED_KEYS = ("caffemodel",)

_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:(?:\s+(.*))?$")
_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
_GIST_ID = re.compile(r"^(?:[A-Za-z0-9_-]+/)?[A-Za-z0-9]+$")


# ---- readme.md front matter ----

_SINGLE_QUOTED = re.compile(r"^'((?:[^']|'')*)'\s*(?:#.*)?$")
_DOUBLE_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(?:#.*)?$')


def _scalar(text, where):
    """A YAML flow scalar: 'single' ('' escapes a quote), "double" (backslash escapes) or
    plain (a ` #` starts a comment)."""
    text = text.strip()
    if text[:1] in ("'", '"'):
        single = _SINGLE_QUOTED.match(text)
        double = _DOUBLE_QUOTED.match(text)
        if single:
            return single.group(1).replace("''", "'")
        if double:
            return re.sub(r"\\(.)", r"\1", double.group(1))
        raise NetkitError("%s: unterminated quoted value %s" % (where, text))
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def parse_frontmatter(text, source="readme.md"):
    """The `key: value` fields between the first two `---` lines of `text`, as a dict of
    strings. Indented lines and `- item` lines (nested values) are skipped."""
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if len(marks) < 2:
        raise NetkitError("%s: no front matter (a block between two '---' lines)" % source)
    fields = {}
    for number in range(marks[0] + 1, marks[1]):
        line = lines[number]
        where = "%s:%d" % (source, number + 1)
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1] in " \t" or line.startswith("- "):
            continue
        match = _KEY_VALUE.match(line.rstrip())
        if not match:
            raise NetkitError("%s: expected 'key: value' in the front matter, got '%s'"
                              % (where, line.strip()))
        fields[match.group(1)] = _scalar(match.group(2) or "", where)
    return fields


def read_model_info(model_dir):
    """Front matter of MODEL_DIR/readme.md, checked: a plain caffemodel file name and, if
    given, a 40-digit hex sha1 (some zoo entries, e.g. VGG's, never published one)."""
    path = os.path.join(model_dir, "readme.md")
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise NetkitError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    info = parse_frontmatter(text, path)
    for key in REQUIRED_KEYS:
        if not info.get(key):
            raise NetkitError("%s: front matter has no '%s' field" % (path, key))
    if not _safe_name(info["caffemodel"]):
        raise NetkitError("%s: caffemodel '%s' must be a plain file name inside the model "
                          "directory" % (path, info["caffemodel"]))
    if info.get("sha1"):
        if not _SHA1.match(info["sha1"]):
            raise NetkitError("%s: sha1 '%s' is not 40 hexadecimal digits"
                              % (path, info["sha1"]))
        info["sha1"] = info["sha1"].lower()
    return info


def _safe_name(name):
    """True for a file name that stays inside the directory it is joined to."""
    return bool(name) and name not in (".", "..") and "\0" not in name \
        and not any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)) \
        and not os.path.isabs(name) and not os.path.splitdrive(name)[0]


# ---- HTTP ----

def _open(url, headers=None, partial=False, timeout=TIMEOUT_S):
    """urlopen with user-facing one-line errors naming the URL. With `partial` (a Range
    request), 416 Range Not Satisfiable answers None instead."""
    request = urllib.request.Request(url, headers=dict({"User-Agent": "netkit"}, **(headers or {})))
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if partial and e.code == 416:
            return None
        raise NetkitError("%s: HTTP %d %s" % (url, e.code, e.reason)) from None
    except urllib.error.URLError as e:
        raise NetkitError("%s: cannot connect: %s" % (url, e.reason)) from None
    except (OSError, ValueError) as e:
        raise NetkitError("%s: cannot download: %s" % (url, e)) from None


class Progress:
    """`...P%, N MB, S KB/s, T seconds passed` on stderr (Caffe's format), redrawn at most
    every PROGRESS_INTERVAL_S seconds."""

    def __init__(self, total, done=0, stream=None):
        self.total, self.done, self.start = total, done, time.monotonic()
        self.stream = stream or sys.stderr
        self.first, self.last = done, 0.0

    def update(self, n, final=False):
        self.done += n
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-3)
        speed = (self.done - self.first) / 1024 / elapsed
        mb = self.done // (1024 * 1024)
        if self.total:
            text = "...%d%%, %d MB, %d KB/s, %d seconds passed" % (
                self.done * 100 // self.total, mb, speed, elapsed)
        else:
            text = "...%d MB, %d KB/s, %d seconds passed" % (mb, speed, elapsed)
        self.stream.write("\r" + text + ("\n" if final else ""))
        self.stream.flush()


# ---- download_model ----

def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_url(info, url=None, environ=os.environ):
    """--url, else $NETKIT_MODEL_MIRROR + '/' + caffemodel, else the readme's caffemodel_url."""
    if url:
        return url
    mirror = environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(info["caffemodel"])
    if not info.get("caffemodel_url"):
        raise NetkitError("readme.md front matter has no 'caffemodel_url' field; give --url or "
                          "set %s" % MIRROR_ENV)
    return info["caffemodel_url"]


def _fetch_to(url, part):
    """Append the rest of `url` to the file `part`, asking for the missing bytes with a
    Range request; a server that answers 200 (ignoring Range) restarts it from zero. An
    interrupted transfer keeps what arrived so the next call resumes it."""
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Range": "bytes=%d-" % offset} if offset else {}
    response = _open(url, headers, partial=bool(offset))
    if response is None:
        # The partial file is longer than what the server has: start again.
        os.unlink(part)
        offset, response = 0, _open(url)
    with response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and status == 206 and _range_start(response) == offset:
            mode = "ab"
        else:
            mode, offset = "wb", 0
        total = offset + length if length is not None else None
        progress = Progress(total, offset)
        received = 0
        with open(part, mode) as f:
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    f.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
            except (OSError, ValueError, http.client.HTTPException) as e:
                progress.update(0, final=True)
                raise NetkitError("%s: download interrupted after %d bytes (%s); run again to "
                                  "resume from %s" % (url, offset + received, e, part)) from None
        progress.update(0, final=True)
    if length is not None and received < length:
        raise NetkitError("%s: download interrupted after %d of %d bytes; run again to resume "
                          "from %s" % (url, offset + received, total, part))


def _range_start(response):
    """First byte position of a 206 answer's Content-Range (`bytes a-b/n`), or None."""
    match = re.match(r"^\s*bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def download_model(model_dir, url=None, out=None):
    """Fetch MODEL_DIR's caffemodel into place, verified against the readme's SHA-1.

    The bytes go to MODEL_DIR/<caffemodel>.part first and are renamed into place only once
    their SHA-1 matches, so the model file is never partial or wrong. Returns the path.
    """
    out = out or sys.stdout
    info = read_model_info(model_dir)
    target = os.path.join(model_dir, info["caffemodel"])
    part = target + ".part"
    expected = info.get("sha1")
    if not expected:
        return _download_unverified(model_dir, info, target, part, url, out)
    if os.path.isfile(target) and sha1_of(target) == expected:
        out.write("Model already exists.\n")
        return target
    source = model_url(info, url)
    if os.path.isfile(target):
        out.write("%s does not match sha1 %s; downloading it again\n" % (target, expected))
    if not (os.path.isfile(part) and sha1_of(part) == expected):
        out.write("Downloading %s to %s\n" % (source, target))
        out.flush()
        _fetch_to(source, part)
        got = sha1_of(part)
        if got != expected:
            os.unlink(part)
            raise NetkitError("%s: SHA-1 mismatch (expected %s, got %s)" % (target, expected, got))
    os.replace(part, target)
    out.write("Done: %s\n" % target)
    return target


def _download_unverified(model_dir, info, target, part, url, out):
    """A readme without sha1: download (resuming a partial file) and rename into place,
    saying plainly that nothing could be checked; an existing file is kept."""
    where = os.path.join(model_dir, "readme.md")
    if os.path.isfile(target):
        out.write("Model already exists (%s gives no sha1 to verify it).\n" % where)
        return target
    source = model_url(info, url)
    out.write("Warning: %s gives no sha1; the download cannot be verified.\n" % where)
    out.write("Downloading %s to %s\n" % (source, target))
    out.flush()
    _fetch_to(source, part)
    os.replace(part, target)
    out.write("Done: %s\n" % target)
    return target


# ---- download_model_from_gist ----

def gist_api():
    return os.environ.get(GIST_API_ENV, GIST_API).rstrip("/")


def _read_json(url):
    with _open(url, {"Accept": "application/vnd.github+json"}) as response:
        raw = response.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise NetkitError("%s: not a JSON answer: %s" % (url, e)) from None


def _gist_files(gist, document, url):
    """[(name, entry)] of a gist API document, every name checked to stay inside its
    directory before anything is written."""
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict) or not files:
        raise NetkitError("%s: gist %s has no files" % (url, gist))
    for name, entry in files.items():
        if not _safe_name(name):
            raise NetkitError("gist %s: refusing file name '%s': it would be written outside "
                              "the model directory" % (gist, name))
        if not isinstance(entry, dict):
            raise NetkitError("%s: gist %s: file '%s' has no content" % (url, gist, name))
    return sorted(files.items())


def _gist_content(gist, name, entry):
    """The bytes of one gist file: its inline content, or its raw_url when the API truncated
    it (files over about 1 MB)."""
    content = entry.get("content")
    if content is not None and not entry.get("truncated"):
        return content.encode("utf-8")
    raw_url = entry.get("raw_url")
    if not raw_url or urllib.parse.urlsplit(raw_url).scheme not in ("http", "https"):
        raise NetkitError("gist %s: file '%s' is truncated and has no http(s) raw_url"
                          % (gist, name))
    with _open(raw_url) as response:
        return response.read()


def download_gist(gist, dirname="models", out=None):
    """Write every file of gist GIST (`id` or `user/id`) into DIRNAME/GIST (with '/' turned
    into '-'), as Caffe's download_model_from_gist.sh does. Files are gathered in a temporary
    directory inside DIRNAME and renamed into place together, so a failure writes nothing.
    Returns the model directory."""
    out = out or sys.stdout
    if not _GIST_ID.match(gist or ""):
        raise NetkitError("'%s' is not a gist id (expected ID or USER/ID, letters and digits)"
                          % gist)
    model_dir = os.path.join(dirname, gist.replace("/", "-"))
    if os.path.exists(model_dir):
        raise NetkitError("%s already exists; move it away so nothing is overwritten"
                          % model_dir)
    url = "%s/gists/%s" % (gist_api(), gist.rsplit("/", 1)[-1])
    files = _gist_files(gist, _read_json(url), url)
    out.write("Downloading Caffe model info to %s ...\n" % model_dir)
    contents = [(name, _gist_content(gist, name, entry)) for name, entry in files]
    os.makedirs(dirname, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".%s." % os.path.basename(model_dir), dir=dirname)
    try:
        for name, data in contents:
            path = os.path.join(staging, name)
            if os.path.dirname(os.path.realpath(path)) != os.path.realpath(staging):
                raise NetkitError("gist %s: refusing file name '%s': it would be written "
                                  "outside the model directory" % (gist, name))
            with open(path, "wb") as f:
                f.write(data)
        os.chmod(staging, 0o777 & ~_umask())
        os.rename(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    out.write("Done\n")
    return model_dir


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
