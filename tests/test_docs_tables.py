"""The docs' tables of augmentation presets, presets and TTA modes are the ones their declarations generate."""

from kagglecifar.cli import docs_tables


def test_the_docs_tables_are_generated_from_the_declarations():
    differ = docs_tables.update(check=True)
    assert not differ, f"run `python -m kagglecifar.cli.docs_tables` to update: {'; '.join(differ)}"


def test_every_declared_choice_is_in_its_help():
    from kagglecifar.cli.app import TTA_HELP, preset_help
    from kagglecifar.config import Recipe, fields_of, preset_names
    from kagglecifar.data.augment import PRESETS
    from kagglecifar.inference.tta import TTA_MODES

    augment_help = fields_of(Recipe)["augment"].metadata["help"]
    assert all(f"{name} ({what})" in augment_help for name, what in PRESETS.items())
    assert all(what in TTA_HELP for what, _ in TTA_MODES.values())
    assert all(f"{name} (" in preset_help("Base recipe") for name in preset_names())
