"""Fidelity: how close a synthetic dataset's reconstructions are to a real tomogram.

:mod:`~factory.fidelity.metrics` measures one volume (histogram, power spectrum, noise, missing
wedge, edges, autocorrelation, capillary ring) and compares two; :mod:`~factory.fidelity.report`
runs a dataset against a real tomogram and writes ``fidelity.json`` and ``fidelity.png``;
:mod:`~factory.fidelity.calibrate` turns the differences into ``--set`` overrides. See README.md in
this package for the definitions.
"""

from factory.fidelity.report import fidelity_report, write_report

__all__ = ["fidelity_report", "write_report"]
