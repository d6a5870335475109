"""The steps the Hydra apps run, as plain functions of a composed config (testable without a CLI)."""
