"""Session shapes for the benchmarks: deterministic, realistic data and its exact sizes.

Every shape is a function of a fixed seed (the same bytes on every run and machine)
and is built from words, numbers and punctuation, so it compresses like real text
(about 3x with zlib), never like ``"x" * n``.  Every shape holds ``user_id`` (what a
read request reads); write requests increment ``hits``.

The app's ``/setup/<kind>`` route (``bench/peers.py``) stores :func:`data` of ``kind``:
one of :data:`SHAPES`, or a point of a curve family (``size_<bytes>``,
``keys_<count>``; see :data:`SIZE_POINTS` and :data:`KEY_POINTS`).
"""

from __future__ import annotations

import functools
import pickle
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

USER_ID = 4242

_WORD_TEXT = (
    "account address amount answer apple article basket battery bicycle blanket bottle "
    "budget button camera candle carpet castle ceiling channel chapter cheese circle "
    "climate coffee collar comfort copper cotton country cousin credit custom damage "
    "danger delivery desert detail device dinner doctor dollar double drawer effect "
    "energy engine evening expert fabric factory family farmer father feather figure "
    "finger flower forest fortune friend garden garlic gentle global golden guitar "
    "hammer handle harbor health height helmet history holiday honey hunter island "
    "jacket jungle kettle kitchen ladder laptop leather lemon letter limit liquid little "
    "luggage magnet market meadow member memory method middle minute mirror moment "
    "monkey morning mother motion muscle napkin nature needle number object office "
    "orange origin output oxygen packet paddle palace pantry paper parcel pencil pepper "
    "person pillow planet pocket poetry police powder prison profit public puzzle rabbit "
    "radio random reason record remote rescue ribbon riddle rocket saddle salmon sample "
    "saucer school screen season second secret sensor shadow silver simple sister socket "
    "spirit spring square stable statue stream street summer supply switch symbol system "
    "tablet target teapot tennis thread ticket timber tomato tongue travel trophy tunnel "
    "turtle uncle update useful valley velvet vessel violin volume wallet walnut window "
    "winter wisdom wonder yellow "
)
WORDS = tuple(_WORD_TEXT.split())
_SMALL_WORDS = ("a", "the", "of", "and", "to", "in", "with", "for", "on", "at", "by", "from")


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def text(rng: random.Random, size: int) -> str:
    """Exactly ``size`` characters of prose: sentences of words, numbers and punctuation."""
    parts: list[str] = []
    length = 0
    while length < size:
        sentence = []
        for _ in range(rng.randint(6, 18)):
            roll = rng.random()
            if roll < 0.25:
                sentence.append(rng.choice(_SMALL_WORDS))
            elif roll < 0.30:
                sentence.append(str(rng.randrange(1, 10_000)))
            else:
                sentence.append(rng.choice(WORDS))
        line = " ".join(sentence).capitalize() + rng.choice((". ", ". ", ". ", "? ", "! ", "; "))
        parts.append(line)
        length += len(line)
    return "".join(parts)[:size]


# --------------------------------------------------------------------------- the shapes


def small_session() -> dict[str, Any]:
    """Two keys: what a logged-in user's session holds on most sites."""
    return {"user_id": USER_ID, "csrf": "9f86d081884c7d659a2feaa0c55ad015"}


def large_session(target_bytes: int = 20_000, seed: int = 20240601) -> dict[str, Any]:
    """About ``target_bytes`` (pickled) of a realistic mix of session data.

    A shopping cart, recently viewed ids, preferences, a form draft and search history,
    built from a 250-word vocabulary with random numbers.
    """
    rng = random.Random(seed)
    data: dict[str, Any] = {
        "user_id": USER_ID,
        "username": "ada.lovelace",
        "roles": ["customer", "beta", "newsletter"],
        "csrf": f"{rng.getrandbits(128):032x}",
        "hits": 0,
        "prefs": {
            "lang": "en-GB",
            "currency": "EUR",
            "theme": "dark",
            "page_size": 48,
            "notifications": {"email": True, "sms": False, "push": True},
        },
        "cart": [],
        "recently_viewed": [],
        "search_history": [],
        "draft": {"subject": words(rng, 8).capitalize(), "paragraphs": []},
    }

    def size() -> int:
        return len(pickle.dumps(data, protocol=5))

    while size() < target_bytes:
        data["cart"].append(
            {
                "sku": f"SKU-{rng.randrange(10**6):06d}",
                "name": words(rng, rng.randint(2, 5)).title(),
                "qty": rng.randint(1, 4),
                "price_cents": rng.randint(199, 49_999),
                "options": [rng.choice(WORDS) for _ in range(rng.randint(0, 3))],
            }
        )
        data["recently_viewed"].extend(rng.randrange(10**7) for _ in range(6))
        data["search_history"].append(words(rng, rng.randint(1, 4)))
        data["draft"]["paragraphs"].append(words(rng, rng.randint(12, 30)).capitalize() + ".")
    return data


def one_value(size: int = 20_000, seed: int = 20_000) -> dict[str, Any]:
    """One key holding ``size`` characters of text (a document, a rich-text draft)."""
    return {"user_id": USER_ID, "document": text(random.Random(seed), size)}


def many_keys(count: int = 200, size: int = 100, seed: int = 200) -> dict[str, Any]:
    """``count`` str values of ``size`` characters each (flags, ids, form fields, ...)."""
    rng = random.Random(seed)
    data: dict[str, Any] = {"user_id": USER_ID}
    for i in range(count):
        data[f"field_{i:04d}"] = text(rng, size)
    return data


_OPTIONS = (
    *(f"size {s}" for s in ("XS", "S", "M", "L", "XL")),
    *(f"colour {c}" for c in ("red", "navy", "black", "white", "olive", "sand")),
    "gift wrap",
    "",
)


def cart(items: int = 50, seed: int = 50) -> dict[str, Any]:
    """A shopping cart: ``items`` dicts of sku, name, qty, price, option under one key."""
    rng = random.Random(seed)
    lines = [
        {
            "sku": f"SKU-{rng.randrange(10**6):06d}",
            "name": words(rng, rng.randint(2, 5)).title(),
            "qty": rng.randint(1, 4),
            "price": round(rng.randint(199, 49_999) / 100, 2),
            "option": rng.choice(_OPTIONS),
        }
        for _ in range(items)
    ]
    return {"user_id": USER_ID, "cart": lines}


def megabyte(values: int = 10, size: int = 100_000, seed: int = 1_000_000) -> dict[str, Any]:
    """About ``values * size`` bytes: ``values`` values of ``size`` characters of text."""
    rng = random.Random(seed)
    data: dict[str, Any] = {"user_id": USER_ID}
    for i in range(values):
        data[f"attachment_{i:02d}"] = text(rng, size)
    return data


@dataclass(frozen=True)
class Shape:
    key: str
    title: str  # short, for table headings
    description: str
    make: Callable[[], dict[str, Any]]


SHAPES: dict[str, Shape] = {
    s.key: s
    for s in (
        Shape("small", "small", "2 keys: `user_id`, `csrf` (a cookie session)", small_session),
        Shape(
            "large",
            "large mix",
            "realistic mix (cart of items, recently viewed ids, preferences, a form draft, "
            "search history), about 20 KB pickled",
            large_session,
        ),
        Shape(
            "value20k",
            "one 20 KB value",
            "one key holding 20,000 characters of text, plus `user_id`",
            one_value,
        ),
        Shape(
            "keys200",
            "200 keys x 100 B",
            "200 str values of 100 characters, plus `user_id`",
            many_keys,
        ),
        Shape(
            "cart",
            "cart of 50",
            "a list of 50 dicts of 5 fields (sku, name, qty, price, option) under one key, "
            "plus `user_id`",
            cart,
        ),
        Shape(
            "mb1",
            "1 MB",
            "10 values of 100,000 characters of text (1,000,000 bytes), plus `user_id`",
            megabyte,
        ),
    )
}
#: The shapes the server-side scenarios run on (every one but ``small``).
SERVER_SHAPES = ("large", "value20k", "keys200", "cart", "mb1")

#: Curve "session size": one value of this many bytes (KB = 1,000 bytes) plus ``user_id``.
SIZE_POINTS = (1_000, 4_000, 16_000, 64_000, 256_000, 1_024_000)
#: Curve "number of keys": this many 100-character values plus ``user_id``.
KEY_POINTS = (1, 10, 100, 300, 1_000)


@functools.cache
def data(kind: str) -> dict[str, Any]:
    """The session data of ``kind`` (cached: do not mutate, copy values out of it)."""
    if kind in SHAPES:
        return SHAPES[kind].make()
    family, _, number = kind.partition("_")
    if family == "size" and number.isdigit():
        return one_value(int(number), seed=int(number))
    if family == "keys" and number.isdigit():
        return many_keys(int(number), 100, seed=int(number))
    raise KeyError(f"unknown session shape {kind!r}")


def pickled_size(kind: str) -> int:
    """Exact size of the shape pickled as one dict (protocol 5)."""
    return len(pickle.dumps(data(kind), protocol=5))


def compress_ratio(kind: str) -> float:
    """How much zlib (level 1, what sa_sessions uses) shrinks the pickled shape."""
    raw = pickle.dumps(data(kind), protocol=5)
    return len(raw) / len(zlib.compress(raw, 1))
