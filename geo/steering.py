"""HLS Content Steering: a packaged master playlist rewritten with one Pathway per edge, and the
steering manifest that orders those Pathways for one client. Pure logic, no I/O.

draft-pantos-hls-rfc8216bis (section "Content Steering"): each Variant Stream carries a
PATHWAY-ID; the EXT-X-CONTENT-STEERING tag names the steering server and the Pathway to use until
the first manifest arrives; the manifest (JSON) gives PATHWAY-PRIORITY, TTL, RELOAD-URI and
PATHWAY-CLONES (new Pathways made from an existing one, so edges added later reach players
that loaded the master before). Rendition groups are per Pathway: the renditions a Pathway's
variants use are served from that Pathway's edge, so each Pathway gets its own GROUP-IDs.

Every variant and rendition gets a STABLE-VARIANT-ID / STABLE-RENDITION-ID (its directory in the
object layout), so a clone gives the exact URI of each (PER-VARIANT-URIS, PER-RENDITION-URIS):
edges on one host differ by port, which a HOST replacement cannot express.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

# Pathway IDs: the spec's alphabet (and that of region names).
PATHWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
STABLE_ID = re.compile(r"[A-Za-z0-9+/=._-]{1,64}")
# One attribute of an attribute-list: NAME=value, the value quoted (commas allowed) or not.
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\r\n]*)(?:,|$)')
# Attributes we set ourselves; the packaged master's own (if any) are dropped.
_OURS = ("PATHWAY-ID", "STABLE-VARIANT-ID", "STABLE-RENDITION-ID")
_GROUP_REFERENCES = ("AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS")
MAX_MASTER_BYTES = 256 * 1024


class NotAMaster(ValueError):
    """The bytes are not a multivariant playlist we can steer."""


@dataclass(frozen=True)
class Entry:
    """One tag of the master that is repeated per Pathway.

    kind: "media" (EXT-X-MEDIA), "variant" (EXT-X-STREAM-INF plus its URI line) or "iframe"
    (EXT-X-I-FRAME-STREAM-INF). `uri` is relative to the master (None: a rendition without URI,
    such as closed captions); `stable_id` names it the same in every Pathway.
    """

    kind: str
    attributes: tuple[tuple[str, str], ...]
    uri: str | None
    stable_id: str


@dataclass(frozen=True)
class Master:
    """A packaged master playlist, split into the session tags (written once) and the entries
    (written once per Pathway)."""

    session: tuple[str, ...]
    entries: tuple[Entry, ...]

    def uris(self, base: str) -> dict[str, dict[str, str]]:
        """Absolute URIs of every variant and rendition under `base` (an edge's URL of the video
        directory, ending in '/'), by stable ID: what a Pathway clone needs."""
        variants: dict[str, str] = {}
        renditions: dict[str, str] = {}
        for entry in self.entries:
            if entry.uri is None:
                continue
            target = renditions if entry.kind == "media" else variants
            target[entry.stable_id] = urljoin(base, entry.uri)
        return {"PER-VARIANT-URIS": variants, "PER-RENDITION-URIS": renditions}


def parse_attributes(text: str) -> list[tuple[str, str]]:
    """An attribute-list as (name, raw value) pairs, in order; raises NotAMaster if malformed."""
    pairs, position = [], 0
    while position < len(text):
        match = _ATTRIBUTE.match(text, position)
        if match is None:
            raise NotAMaster(f"malformed attribute list: {text[:80]!r}")
        pairs.append((match.group(1), match.group(2)))
        position = match.end()
    return pairs


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _relative(uri: str) -> str:
    # Only relative references inside the video's directory: they are what the packager writes,
    # and anything else (absolute URLs, '..') would let the master point players elsewhere.
    parts = urlsplit(uri)
    if parts.scheme or parts.netloc or uri.startswith("/") or ".." in uri.split("/") or not uri:
        raise NotAMaster(f"URI {uri!r} is not relative to the master")
    return uri


def _stable_id(uri: str | None, kind: str, taken: set[str]) -> str:
    # The rendition directory ("v720/index.m3u8" -> "v720"); I-frame variants get a suffix.
    stem = (uri or kind).split("/")[0].split("?")[0] or kind
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:48]
    if kind == "iframe":
        stem += "-iframes"
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}.{n}"
    taken.add(candidate)
    return candidate


def parse_master(body: bytes) -> Master:
    """Split a packaged master playlist; raises NotAMaster for anything else."""
    if len(body) > MAX_MASTER_BYTES:
        raise NotAMaster("master playlist too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAMaster("master playlist is not UTF-8") from None
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise NotAMaster("not an M3U8 playlist")
    session: list[str] = []
    entries: list[Entry] = []
    taken: set[str] = set()
    pending: list[tuple[str, str]] | None = None  # an EXT-X-STREAM-INF waiting for its URI
    for line in lines[1:]:
        if not line:
            continue
        if pending is not None and not line.startswith("#"):
            entries.append(Entry("variant", tuple(pending), _relative(line),
                                 _stable_id(line, "variant", taken)))
            pending = None
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-STREAM-INF":
            pending = [a for a in parse_attributes(value) if a[0] not in _OURS]
        elif tag in ("#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF"):
            attributes = [a for a in parse_attributes(value) if a[0] not in _OURS]
            raw = dict(attributes).get("URI")
            uri = _relative(_unquote(raw)) if raw is not None else None
            kind = "media" if tag == "#EXT-X-MEDIA" else "iframe"
            entries.append(Entry(kind, tuple(a for a in attributes if a[0] != "URI"), uri,
                                 _stable_id(uri, kind, taken)))
        elif tag in ("#EXTINF", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE"):
            raise NotAMaster("a media playlist, not a master")
        elif tag == "#EXT-X-CONTENT-STEERING":
            continue  # ours replaces it
        elif line.startswith("#"):
            session.append(line)  # version, independent segments, session data, comments...
        else:
            raise NotAMaster(f"URI line without EXT-X-STREAM-INF: {line[:80]!r}")
    if pending is not None:
        raise NotAMaster("EXT-X-STREAM-INF without a URI")
    if not any(entry.kind == "variant" for entry in entries):
        raise NotAMaster("no variant streams")
    return Master(tuple(session), tuple(entries))


@dataclass(frozen=True)
class Pathway:
    id: str
    base: str  # the video directory on this Pathway's edge, ending in '/'


def _attribute_text(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{name}={value}" for name, value in pairs)


def render_master(master: Master, pathways: Sequence[Pathway], server_uri: str) -> str:
    """The master with its entries once per Pathway (URIs absolute to that Pathway's edge,
    GROUP-IDs suffixed with the Pathway ID), steered from `server_uri`; the first Pathway is
    the one to use until the steering manifest arrives (and the one non-steering players see
    first)."""
    lines = ["#EXTM3U", *master.session,
             f'#EXT-X-CONTENT-STEERING:SERVER-URI="{server_uri}",PATHWAY-ID="{pathways[0].id}"']
    for pathway in pathways:
        def group(value: str, pathway: Pathway = pathway) -> str:
            return value if value == "NONE" else f'"{_unquote(value)}-{pathway.id}"'

        for kind in ("media", "variant", "iframe"):
            for entry in (e for e in master.entries if e.kind == kind):
                attributes = [(n, group(v) if n == "GROUP-ID" or n in _GROUP_REFERENCES else v)
                              for n, v in entry.attributes]
                stable = "STABLE-RENDITION-ID" if kind == "media" else "STABLE-VARIANT-ID"
                attributes.append((stable, f'"{entry.stable_id}"'))
                if kind != "media":
                    attributes.append(("PATHWAY-ID", f'"{pathway.id}"'))
                uri = None if entry.uri is None else urljoin(pathway.base, entry.uri)
                if kind == "variant":
                    lines += ["#EXT-X-STREAM-INF:" + _attribute_text(attributes), uri]
                else:
                    if uri is not None:
                        attributes.append(("URI", f'"{uri}"'))
                    tag = "#EXT-X-MEDIA:" if kind == "media" else "#EXT-X-I-FRAME-STREAM-INF:"
                    lines.append(tag + _attribute_text(attributes))
    return "\n".join(lines) + "\n"


def steering_manifest(
    master: Master,
    priority: Sequence[Pathway],
    known: Sequence[str],
    everyone: Mapping[str, Pathway],
    *,
    ttl: int,
    reload: str,
) -> dict:
    """The steering manifest for one client: `priority` (healthy Pathways, best first), and a
    clone of every Pathway in `everyone` that the client's master did not define (`known`),
    made from the client's first known Pathway with each URI given in full. RELOAD-URI is
    `reload` with the Pathways the client then has, so clones are sent once."""
    clones = []
    if known:
        for pathway in everyone.values():
            if pathway.id not in known:
                clones.append({"BASE-ID": known[0], "ID": pathway.id,
                               "URI-REPLACEMENT": master.uris(pathway.base)})
    defined = [*known, *(clone["ID"] for clone in clones)]
    return {
        "VERSION": 1,
        "TTL": ttl,
        "RELOAD-URI": f"{reload}?{pathway_query(defined)}",
        # Only Pathways the client knows: a player may reject a manifest naming others.
        "PATHWAY-PRIORITY": [p.id for p in priority if p.id in defined],
        "PATHWAY-CLONES": clones,
    }


def pathway_query(ids: Iterable[str]) -> str:
    """The `p` query parameter carrying the Pathways a client has."""
    return "p=" + quote(",".join(ids), safe=",")
