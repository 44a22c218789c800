import json

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from tether.models.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture
def write_jsonl(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write

