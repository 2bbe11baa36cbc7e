"""The table of formats (formats.py): one record each, and what is derived from it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from hotfolder.formats import BY_MEDIA_TYPE, FORMATS, NAMES, WORDS
from hotfolder.recipes import OutputSpec, parse_chain

MODE_CASES = [(f.name, mode) for f in FORMATS.values() if f.pillow for mode in sorted(f.modes)]


def test_every_format_name_has_one_record() -> None:
    assert sorted(FORMATS) == sorted(NAMES)
    assert all(FORMATS[name].name == name for name in FORMATS)


def test_words_and_media_types_lead_to_their_format() -> None:
    assert WORDS["jpg"] == "jpeg" and WORDS["tif"] == "tiff"
    assert BY_MEDIA_TYPE["image/x-ms-bmp"] == "bmp"
    assert OutputSpec.model_validate({"format": "JPG"}).format == "jpeg"
    assert parse_chain("tif").steps[0].params.model_dump()["format"] == "tiff"


@pytest.mark.parametrize("name,mode", MODE_CASES)
def test_each_encoder_writes_the_modes_the_table_gives_it(name: str, mode: str) -> None:
    record = FORMATS[name]
    assert record.pillow is not None
    out = io.BytesIO()
    Image.new(mode, (4, 4)).save(out, record.pillow)  # a see-through image for LA and RGBA
    with Image.open(io.BytesIO(out.getvalue())) as image:
        assert image.format == record.pillow and image.size == (4, 4)
        if mode in ("LA", "RGBA"):
            assert record.alpha and image.has_transparency_data
