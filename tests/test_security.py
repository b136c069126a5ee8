"""Security: the known Gradio file-access attacks replayed against the real app (server
files through the file routes, FileData payloads naming server paths, path traversal,
symlinks, absolute paths), the upload size limit, no pickle or remote code anywhere in
the playground, hub ids checked, logins compared in constant time, and a warning when
the app is opened to others without a login."""
from __future__ import annotations

import hmac
import os
import re
import sys
from pathlib import Path

import gradio
import httpx
import numpy as np
import pytest
from gradio.utils import get_upload_folder
from PIL import Image

import app as app_module
from app_server import shared_app
from playground import BadInput, ModelError, PlaygroundError, Registry
from playground.registry import STARTER_DIR, make_entry, parse_model_flag
from playground.ui import serving

ROOT = Path(__file__).resolve().parent.parent
SECRET = "TOP-SECRET-8f2c"


@pytest.fixture(scope="module")
def server():
    return shared_app()


@pytest.fixture(scope="module")
def secrets_outside(tmp_path_factory):
    """A text file and a valid PNG outside every folder the app serves: if either is ever
    read back (or the PNG accepted as input), the server leaked a file."""
    folder = tmp_path_factory.mktemp("server_secrets")
    text = folder / "secret.txt"
    text.write_text(SECRET)
    picture = folder / "secret.png"
    Image.fromarray(np.full((64, 64, 3), 77, np.uint8)).save(picture)
    return text, picture


@pytest.fixture(scope="module")
def planted_links(server, secrets_outside):
    """Symlinks to the secrets planted inside the folders Gradio does serve (its upload
    cache and the API's output folder), as an attacker with a foothold might."""
    text, picture = secrets_outside
    links = []
    for folder, name in ((Path(get_upload_folder()), "i7-link"),
                         (Path(server[0].playground_output_dir), "i7-link")):
        folder.mkdir(parents=True, exist_ok=True)
        for target, suffix in ((text, ".txt"), (picture, ".png")):
            link = folder / f"{name}{suffix}"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
            links.append(link)
    yield links
    for link in links:
        link.unlink(missing_ok=True)


def leaked(response: httpx.Response) -> bool:
    return SECRET in response.text or "root:x:" in response.text or "argparse" in response.text


# ---------------------------------------------------------------- the file routes

def test_file_routes_serve_no_server_file(server, secrets_outside, planted_links):
    _, url = server
    text, _ = secrets_outside
    output_dir = server[0].playground_output_dir
    attacks = [f"file={text}", f"gradio_api/file={text}",            # absolute paths
               "file=/etc/passwd", "gradio_api/file=/etc/passwd",
               f"gradio_api/file={ROOT / 'app.py'}", "gradio_api/file=app.py",  # the code
               "gradio_api/file=..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",        # traversal
               "gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
               f"gradio_api/file={output_dir}/../../../etc/passwd",
               f"gradio_api/file={get_upload_folder()}/..%2F..%2F..%2Fetc%2Fpasswd",
               *[f"gradio_api/file={link}" for link in planted_links]]        # symlinks
    for attack in attacks:
        response = httpx.get(url + attack)
        assert response.status_code in (400, 403, 404), f"{attack}: {response.status_code}"
        assert not leaked(response), f"{attack} leaked a server file"


def test_results_are_still_served(server):
    """The refusals above are not a route that serves nothing: a real result is served."""
    from gradio_client import Client
    client = Client(server[1], verbose=False, download_files=False)
    answer, _ = client.predict(prompt="a red circle", steps=1, seed=1,
                               api_name="/text_to_image")
    response = httpx.get(answer.get("url") or f"{server[1]}gradio_api/file={answer['path']}")
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"


# ---------------------------------------------------------------- FileData payloads

def call_raw(url: str, api_name: str, data: list) -> str:
    """POST /gradio_api/call/<name> with a raw payload; the event stream's text."""
    event = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}).json()
    assert "event_id" in event, event
    return httpx.get(f"{url}gradio_api/call/{api_name}/{event['event_id']}", timeout=120).text


def file_data(path: str) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_file_data_naming_a_server_path_is_refused(server, secrets_outside, planted_links):
    """GHSA-j36p-7w88-g82j and friends: a payload that names a file on the server instead
    of an upload. The secret PNG is a valid picture, so accepting it would succeed."""
    _, url = server
    _, picture = secrets_outside
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 255
    paths = [str(picture),                                             # absolute path
             os.path.relpath(picture, get_upload_folder()),            # relative traversal
             f"{get_upload_folder()}/../{os.path.relpath(picture, '/tmp')}",
             "/etc/passwd", "file:///etc/passwd",
             *[str(link) for link in planted_links if link.suffix == ".png"]]  # symlinks
    for path in paths:
        for api_name, data in (
                ("upscale", [file_data(path), "", "", "starter", None, 1, 7.5, 20, 1]),
                ("inpaint", [file_data(path), file_data(path), "x", "", "starter", None, 1,
                             7.5, 1.0, 1])):
            answer = call_raw(url, api_name, data)
            assert "event: error" in answer and "event: complete" not in answer, \
                f"{api_name} accepted {path}"
            assert SECRET not in answer and "root:x:" not in answer


def test_the_api_refuses_paths_that_are_not_this_requests_uploads(secrets_outside,
                                                                  planted_links):
    """The check itself, without the server: what `uploaded_picture` accepts."""
    import gradio as gr
    from playground.ui.api import uploaded_picture

    _, picture = secrets_outside
    for payload in (str(picture), {"path": str(picture)}, file_data("../../etc/passwd"),
                    *[str(link) for link in planted_links if link.suffix == ".png"]):
        with pytest.raises(gr.Error, match="uploaded with this request"):
            uploaded_picture(payload, "image")
    upload = Path(get_upload_folder()) / "i7-real-upload.png"
    Image.open(picture).save(upload)
    try:
        assert uploaded_picture(file_data(upload), "image").size == (64, 64)
    finally:
        upload.unlink()


def test_uploads_have_a_size_limit(server):
    _, url = server
    assert serving.launch_options(server[0])["max_file_size"] == serving.MAX_UPLOAD == "20mb"
    big = httpx.post(url + "gradio_api/upload",
                     files={"files": ("big.png", b"\0" * (21 * 2**20), "image/png")})
    assert big.status_code == 413
    small = httpx.post(url + "gradio_api/upload",
                       files={"files": ("small.png", b"\0" * 1000, "image/png")})
    assert small.status_code == 200


def test_launch_serves_only_the_output_folder_and_no_flagging(server):
    app = server[0]
    options = serving.launch_options(app)
    assert options["allowed_paths"] == [str(app.playground_output_dir)]
    assert options["server_name"] == "127.0.0.1" and options["enable_monitoring"] is False
    code = "\n".join(p.read_text() for p in (ROOT / "playground").rglob("*.py"))
    assert "gr.Interface(" not in code and "allow_flagging" not in code
    assert not re.search(r"flagging_mode\s*=\s*['\"](?!never)", code)
    assert not (ROOT / ".gradio" / "flagged").exists()


def test_gradio_has_the_file_access_fixes():
    """CVE-2023-51449 and GHSA-j36p-7w88-g82j are fixed in the versions we require."""
    def version(text):
        return tuple(int(part) for part in re.findall(r"\d+", text)[:2])
    assert version(gradio.__version__) >= (6, 16)
    pin = re.search(r"^gradio\s*(==|>=|~=)\s*([\d.]+)", (ROOT / "requirements.txt").read_text(),
                    re.MULTILINE)
    assert pin and version(pin.group(2)) >= (6, 16)


# ---------------------------------------------------------------- models: no code from files

CODE_FILES = [*sorted((ROOT / "playground").rglob("*.py")), ROOT / "app.py"]
BANNED = {
    r"\btorch\.load\s*\(": "torch.load unpickles",
    r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|joblib|cloudpickle)\b": "pickle",
    r"\bpickle\.loads?\s*\(": "pickle",
    r"trust_remote_code\s*=\s*True": "remote code",
    r"use_safetensors\s*=\s*False": "pickle weights",
    r"weights_only\s*=\s*False": "pickle weights",
    r"custom_pipeline\s*=": "a pipeline's code from the hub",
    r"(?<![.\w])(exec|eval)\s*\(": "code from data",
}


@pytest.mark.parametrize("pattern", BANNED)
def test_no_pickle_or_remote_code_anywhere(pattern):
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in CODE_FILES for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(pattern, line, re.MULTILINE)]
    assert not hits, f"{BANNED[pattern]}: {hits}"


def test_weights_are_safetensors_only():
    files = [p for p in Path(STARTER_DIR).rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl",
                                                ".pickle", ".safetensors")]
    assert weights and all(p.suffix == ".safetensors" for p in weights), weights
    assert not [p for p in files if p.suffix == ".py"], "code inside a model folder"


def test_a_pickle_file_is_refused_not_loaded(tmp_path, tiny_models):
    """A model folder whose UNet is a pickle (.bin) beside no safetensors: refused with a
    message, and the pickle is never opened (its payload would create a file)."""
    import shutil
    folder = tmp_path / "evil"
    shutil.copytree(tiny_models / "text2img", folder)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "pwned"
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # pickle opcodes
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(payload)
    registry = Registry([make_entry("evil", str(folder))], device="cpu",
                        allowed_dirs=[str(tmp_path)])
    with pytest.raises(ModelError, match="could not be loaded"):
        registry.pipeline("evil", "text_to_image")
    assert not marker.exists(), "the pickle was executed"


@pytest.mark.parametrize("source", [
    "../../etc/passwd", "owner/../../etc", "https://evil.example/owner/model",
    "owner/name/extra", "owner name/model", "-owner/model", "owner/model;rm -rf /",
    "owner/" + "a" * 200, "", "/"])
def test_hub_ids_are_validated(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative sources are looked up here: nothing exists
    with pytest.raises(PlaygroundError):
        parse_model_flag(f"m={source}" if source else "m=")


def test_local_model_folders_only_from_allowed_dirs(tmp_path, tiny_models):
    entry = make_entry("outside", str(tiny_models / "text2img"))
    with pytest.raises(ModelError, match="outside the allowed model folders"):
        Registry([entry], device="cpu")
    link_dir = tmp_path / "allowed"
    link_dir.mkdir()
    (link_dir / "sneaky").symlink_to(tiny_models / "text2img")  # a symlink out of an allowed dir
    with pytest.raises(ModelError, match="outside the allowed model folders"):
        Registry([make_entry("sneaky", str(link_dir / "sneaky"))], device="cpu",
                 allowed_dirs=[str(link_dir)])


# ---------------------------------------------------------------- logins and exposure

def test_logins_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(serving.hmac, "compare_digest", counting)
    check = serving.login_checker([("ann", "correct horse"), ("bob", "battery staple")])
    for user, password in (("ann", "correct horse"), ("ann", "wrong"), ("zed", "x"),
                           ("bob", "battery staple"), ("", "")):
        calls.clear()
        ok = check(user, password)
        assert ok == ((user, password) in (("ann", "correct horse"), ("bob", "battery staple")))
        assert len(calls) == 4, "every login is compared, whatever matched: no early exit"
    assert "==" not in re.sub(r"#.*", "", _source(serving.login_checker))


def _source(fn) -> str:
    import inspect
    return inspect.getsource(fn)


@pytest.mark.parametrize("flags, warned", [
    (["--host", "0.0.0.0"], True), (["--share"], True), (["--host", "::"], True),
    (["--host", "0.0.0.0", "--auth", "ann:a-long-password"], False), ([], False)])
def test_open_server_without_login_prints_a_warning(flags, warned, monkeypatch, capsys):
    launched = {}

    class NoBuild:
        playground_output_dir = "/nonexistent"

        def launch(self, **options):
            launched.update(options)

        def block_thread(self):
            pass

    monkeypatch.setattr(app_module, "build_app", lambda pg, **kwargs: NoBuild())
    app_module.main(flags)
    err = capsys.readouterr().err
    assert ("WARNING" in err and "--auth" in err) == warned, err
    assert launched["allowed_paths"] == ["/nonexistent"]
    assert (launched["auth"] is not None) == ("--auth" in flags)


def test_bad_logins_are_refused_at_start():
    for bad in ("nocolon", ":password", "user:"):
        with pytest.raises(BadInput):
            serving.parse_login(bad)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
