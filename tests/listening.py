"""What the search, radio and autoplay tests share: a FakeTube catalogue of
songs, and a config file for the real CLI pointed at the fake."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.tube import FakeTube
from tests.proxy_fixture import random_audio

# (id, artist, title): "Blue" songs for searches; the first one's mix is the rest.
CATALOGUE = (
    ("blueMoon001", "Ella Fitzgerald", "Blue Moon"),
    ("blueSky0002", "Electric Light Orchestra", "Mr. Blue Sky"),
    ("blueVelvet3", "Bobby Vinton", "Blue Velvet"),
    ("kindOfBlue4", "Miles Davis", "So What"),
    ("greenOnions", "Booker T. & the M.G.'s", "Green Onions"),
    ("redRedWine6", "UB40", "Red Red Wine"),
)


def add_catalogue(fake: FakeTube, *, size: int = 4096, duration: float = 180.0) -> list[str]:
    """Serve the catalogue (random bytes for audio) and list it; the ids, in order."""
    for n, (song_id, artist, title) in enumerate(CATALOGUE):
        fake.add_song(song_id, random_audio(size, seed=n + 1), artist=artist, title=title,
                      duration=duration + n)
    ids = [song_id for song_id, _, _ in CATALOGUE]
    fake.mixes[ids[0]] = list(ids)  # a mix starts with its seed
    return ids


def listening_config(path: Path, fake: FakeTube, db: Path, *, mpd_port: int | None = None,
                     extra: str = "") -> Path:
    """A config for the CLI: the store, every listing and player page on the fake."""
    text = (f'[store]\npath = "{db}"\n'
            f'[upstream]\nallowed_hosts = ["127.0.0.1"]\n'
            f'[resolver]\nsource_url_template = "{fake.watch_url_template}"\n'
            f'search_url_template = "{fake.search_url_template}"\n'
            f'radio_url_template = "{fake.radio_url_template}"\n'
            "timeout = 20.0\nmax_calls_per_minute = 6000\n")
    if mpd_port is not None:
        text += f'[mpd]\nhost = "127.0.0.1"\nport = {mpd_port}\n'
    path.write_text(text + extra, encoding="utf-8")
    return path
