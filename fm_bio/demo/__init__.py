"""Embedded demo data: deterministic synthetic MESA and sleep-accel trees in the published layouts.

See ``fm_bio.demo.generate`` for the entry points (``ensure_demo_data``, ``generate_mesa_demo``,
``generate_sleep_accel_demo``) and the CLI.
"""
