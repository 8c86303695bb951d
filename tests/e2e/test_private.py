"""Private means private on the delivery path (issue 13), against `reel up --demo`'s real
processes: tokenised playback URLs from the API, every object kind refused without a valid token
by edge, origin and geo, one cached copy for every viewer, key rotation, privacy changes through
the edges within seconds, tokens never in the logs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import m3u8
import pytest
import requests
from playwright.sync_api import Page

from reel.playback_token import KeyRing, split_path, token_path
from tests.e2e.conftest import Demo
from tests.player import play_with_switch, player_page

UNKNOWN = "nosuchvideo123"


@dataclass
class Api:
    demo: Demo
    admin: dict[str, str]

    def get(self, video_id: str, auth: bool = True) -> requests.Response:
        return requests.get(f"{self.demo.control}/api/v1/videos/{video_id}",
                            headers=self.admin if auth else {}, timeout=10)

    def video(self, video_id: str) -> dict:
        resp = self.get(video_id)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def copy(self, privacy: str) -> str:
        resp = requests.post(f"{self.demo.control}/api/v1/videos/{self.demo.video_id}/copies",
                             json={"copies": [{"title": f"{privacy} copy", "privacy": privacy}]},
                             headers=self.admin, timeout=30)
        assert resp.status_code == 201, resp.text
        return resp.json()["items"][0]["id"]

    def set_privacy(self, video_id: str, privacy: str) -> dict:
        resp = requests.patch(f"{self.demo.control}/api/v1/videos/{video_id}",
                              json={"privacy": privacy}, headers=self.admin, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(scope="module")
def api(demo: Demo) -> Api:
    token = (demo.up.data / "admin-token").read_text().strip()
    return Api(demo, {"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def private(api: Api) -> str:
    return api.copy("private")


def ring(demo: Demo) -> KeyRing:
    return KeyRing.load(str(demo.up.data / "playback-keys.json"))


def token_of(url: str) -> str:
    token = split_path("/" + url.split("/", 3)[3].removeprefix("steer/"))[1]
    assert token is not None, url
    return token


def objects(demo: Demo, video_id: str, token: str) -> dict[str, str]:
    """Each object kind's path (without token) of a packaged video."""
    url = demo.edges[0] + token_path(f"/vod/{video_id}/master.m3u8", token)
    master = m3u8.loads(requests.get(url, timeout=10).text)
    rendition = master.playlists[0].uri  # e.g. v1080/index.m3u8
    name = rendition.split("/")[0]
    return {
        "master": "master.m3u8",
        "rendition playlist": rendition,
        "iframe playlist": master.iframe_playlists[0].uri,
        "init": f"{name}/init.mp4",
        "segment": f"{name}/seg_00001.m4s",
        "poster": "thumbs/poster.jpg",
        "storyboard": "thumbs/storyboard.vtt",
        "storyboard image": "thumbs/storyboard_01.jpg",
    }


def assert_refused(resp: requests.Response, *context: object) -> None:
    assert resp.status_code == 403, (resp.url, resp.status_code, *context)
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["status"] == 403


def test_the_api_gives_tokenised_urls_to_who_may_watch(api: Api, private: str) -> None:
    video = api.video(private)
    assert "/~" in video["playback_url"] and "/~" in video["poster_url"]
    assert api.get(private, auth=False).status_code == 404  # anonymous: as if absent
    public = api.video(api.demo.video_id)
    assert "~" not in public["playback_url"] and "~" not in public["poster_url"]


def test_hlsjs_plays_a_private_video_over_two_renditions(api: Api, private: str, page: Page) -> None:
    with player_page() as player:
        page.goto(player + "?" + requests.compat.urlencode({"src": api.video(private)["playback_url"]}))
        seen = play_with_switch(page)
    assert seen["errors"] == [] and seen["media_error"] is None
    assert len(seen["played"]) >= 2


def test_every_object_kind_is_refused_without_a_valid_token(api: Api, private: str) -> None:
    demo = api.demo
    keys = ring(demo)
    playback = api.video(private)["playback_url"]
    good = token_of(playback)
    other = token_of(api.video(api.copy("private"))["playback_url"])
    expired = keys.sign(private, -60)
    altered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    kinds = objects(demo, private, good)
    servers = {"edge": demo.edges[1], "origin": demo.origins[0], "geo": demo.geo}
    for server, base in servers.items():
        for kind, rest in kinds.items():
            plain = f"/vod/{private}/{rest}"
            ok = requests.get(base + token_path(plain, good), timeout=10)
            assert ok.status_code == 200, (server, kind, ok.status_code)
            for label, token in (("none", None), ("altered", altered), ("expired", expired),
                                 ("other video's", other)):
                url = base + (plain if token is None else token_path(plain, token))
                assert_refused(requests.get(url, timeout=10), server, kind, label)
                # The same answer for a video that does not exist.
                ghost = plain.replace(private, UNKNOWN)
                ghost_url = base + (ghost if token is None else token_path(ghost, token))
                assert_refused(requests.get(ghost_url, timeout=10), server, kind, label, "unknown")
    # The steered master at geo keeps the token in every URI it writes, and refuses without.
    steered = requests.get(playback, timeout=10)
    assert steered.status_code == 200 and f"/~{good}/" in steered.text
    uris = [line for line in steered.text.splitlines() if line.startswith("http")]
    assert uris and all(f"/~{good}/" in uri for uri in uris)
    # A client that knows one Pathway only gets the others as clones, each URI in full.
    server_uri = steered.text.split('SERVER-URI="')[1].split('"')[0]
    first = server_uri.split("p=")[1].split(",")[0]
    manifest_url = steered.url.rsplit("/", 1)[0] + f"/steering.json?p={first}"
    manifest = requests.get(manifest_url, timeout=10).json()
    clones = json.dumps(manifest.get("PATHWAY-CLONES", []))
    assert f"/~{good}/" in clones and clones.count("http") == clones.count(f"/~{good}/"), clones
    for token in (None, altered, other):
        path = f"/steer/vod/{private}/master.m3u8"
        assert_refused(requests.get(demo.geo + (path if token is None else path.replace(
            "/master.m3u8", f"/~{token}/master.m3u8")), timeout=10))


def test_many_viewers_with_their_own_tokens_share_one_cached_copy(api: Api) -> None:
    demo, keys = api.demo, ring(api.demo)
    video = api.copy("private")  # nothing of it cached anywhere yet
    tokens = {keys.sign(video, 600 + n) for n in range(40)}
    plain = f"/vod/{video}/thumbs/poster.jpg"

    def fetch(token: str) -> tuple[int, str]:
        resp = requests.get(demo.edges[1] + token_path(plain, token), timeout=10)
        return resp.status_code, resp.headers["X-Cache"]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(fetch, sorted(tokens)))
    assert {status for status, _ in results} == {200}
    assert [x for _, x in results].count("MISS") == 1  # one origin fetch for every viewer


def _write_ring(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # the services re-read it within a second or two


def test_keys_rotate_without_breaking_playback_in_progress(api: Api, private: str, page: Page) -> None:
    demo = api.demo
    path = demo.up.data / "playback-keys.json"
    before = json.loads(path.read_text())
    playback = api.video(private)["playback_url"]
    old = token_of(playback)
    segment = f"/vod/{private}/{objects(demo, private, old)['segment']}"
    fresh = KeyRing.generate("k2")["keys"]
    try:
        with player_page() as player:
            page.goto(player + "?" + requests.compat.urlencode({"src": playback}))
            page.wait_for_function("() => window.hls && window.hls.levels.length >= 2", timeout=30_000)
            # Rotation as an operator does it: the new key first reaches every service that
            # checks tokens (still signing with the old one), then becomes the signing key...
            _write_ring(path, {"sign": before["sign"], "keys": {**before["keys"], **fresh}})
            time.sleep(2.5)
            _write_ring(path, {"sign": "k2", "keys": {**before["keys"], **fresh}})
            new = _until(lambda: token_of(api.video(private)["playback_url"]), lambda t: t.startswith("k2."))
            for base in (demo.edges[0], demo.origins[0]):  # both keys valid at once
                for token in (old, new):
                    assert requests.get(base + token_path(segment, token), timeout=10).status_code == 200
            seen = play_with_switch(page, until=12.0)  # the old key's URL plays on through it
        assert seen["errors"] == [] and seen["media_error"] is None
        # ...and the old key is retired later: its URLs stop, the new ones go on.
        _write_ring(path, {"sign": "k2", "keys": fresh})
        _until(lambda: requests.get(demo.edges[0] + token_path(segment, old), timeout=10).status_code,
               lambda status: status == 403)
        assert requests.get(demo.edges[0] + token_path(segment, new), timeout=10).status_code == 200
    finally:
        _write_ring(path, {"sign": "k2", "keys": {**before["keys"], **fresh}})
        time.sleep(2.5)  # later tests' tokens: k1's and k2's both valid again


def _until(probe, ok, timeout: float = 6.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r}"
        time.sleep(0.2)


def test_privacy_changes_reach_cached_copies_within_seconds(api: Api) -> None:
    demo = api.demo
    video = api.copy("public")
    plain = f"/vod/{video}/master.m3u8"
    for _ in range(2):
        resp = requests.get(demo.edges[0] + plain, timeout=10)
    assert resp.status_code == 200 and resp.headers["X-Cache"] == "HIT"

    started = time.monotonic()
    made_private = api.set_privacy(video, "private")
    assert "/~" in made_private["playback_url"]
    _until(lambda: requests.get(demo.edges[0] + plain, timeout=10).status_code, lambda s: s == 403)
    assert time.monotonic() - started < 6
    token = token_of(made_private["playback_url"])
    assert requests.get(demo.edges[0] + token_path(plain, token), timeout=10).status_code == 200

    made_public = api.set_privacy(video, "public")
    assert "~" not in made_public["playback_url"]
    _until(lambda: requests.get(demo.edges[0] + plain, timeout=10).status_code, lambda s: s == 200)
    assert requests.get(made_public["playback_url"], timeout=10).status_code == 200


def test_unlisted_plays_with_its_link(api: Api) -> None:
    demo = api.demo
    video = api.copy("unlisted")
    seen = api.get(video, auth=False)
    assert seen.status_code == 200  # anyone with the link
    url = seen.json()["playback_url"]
    assert "/~" in url and requests.get(url, timeout=10).status_code == 200
    assert_refused(requests.get(f"{demo.edges[0]}/vod/{video}/master.m3u8", timeout=10))
    assert requests.get(demo.edges[0] + token_path(f"/vod/{video}/master.m3u8", token_of(url)),
                        timeout=10).status_code == 200


def test_tokens_never_appear_in_the_logs(api: Api, private: str) -> None:
    token = token_of(api.video(private)["playback_url"])
    signature = token.split(".")[2]
    logs = list(_logs(api.demo.up.data))
    assert logs
    for path in logs:
        assert signature not in path.read_text(errors="replace"), path


def _logs(data: Path) -> Iterator[Path]:
    yield from (p for p in data.rglob("*.log") if p.is_file())
