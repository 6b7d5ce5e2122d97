"""QM9 (Ramakrishnan et al. 2014, doi:10.1038/sdata.2014.22) from the ``qm9pack`` package: 11 regression targets.

The 11 targets are those of the MTL benchmarks that use QM9 (Navon et al. 2022, Nash-MTL, arXiv 2202.01017;
Liu et al. 2023, FAMO, arXiv 2306.03792; LibMTL): dipole moment μ, isotropic polarizability α, HOMO and LUMO
energies, electronic spatial extent ⟨R²⟩, ZPVE, U0, U, H, G at 298 K and heat capacity c_v.

Here a molecule is its **SMILES string fed as text** to a sequence encoder, on a fixed random subset
(PCG64, :data:`~hf_mtl.data.embedded.SPLIT_SEED`), with every target standardised by the training subset's
mean and sd. Errors are therefore in units of one target sd, and the numbers are **not comparable** with
published QM9 results: those use message-passing graph networks over 3-D geometry, ~110k training
molecules, and MAE in physical units; a text encoder never sees the geometry that U0, ZPVE or ⟨R²⟩ depend on.
Δm is scale-free, so it is still a fair comparison of methods *within* this set-up.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hf_mtl.data.embedded import SPLIT_SEED, package_file
from hf_mtl.tasks import Task, TaskKind

#: target name → qm9pack column (units: D, a0³, Ha, Ha, a0², Ha, Ha, Ha, Ha, Ha, cal/(mol K)).
QM9_TARGETS: dict[str, str] = {
    "mu": "Dipole_debye", "alpha": "Polarizability_bohr3", "homo": "HOMO_au", "lumo": "LUMO_au",
    "r2": "R2_bohr2", "zpve": "ZPVE_au", "u0": "InternalEnergy_0K_au", "u298": "InternalEnergy_298K_au",
    "h298": "Enthalphy_298K_au", "g298": "GibbsFreeEnergy_298K_au", "cv": "Heatcapacity_Cv_cal_mol_K",
}
QM9_PARTS = ("data/qm9_part1.csv", "data/qm9_part2.csv", "data/qm9_part3.csv")
#: Size of the fixed subset: training and validation molecules.
QM9_TRAIN, QM9_VALIDATION = 10_000, 1_000


def load_qm9_frame() -> pd.DataFrame:
    """SMILES and the 11 target columns of all ~134k molecules (reads only those columns)."""
    columns = ["SMILES", *QM9_TARGETS.values()]
    frames = [pd.read_csv(package_file("qm9pack", "qm9pack", part), usecols=columns) for part in QM9_PARTS]
    return pd.concat(frames, ignore_index=True).dropna()


def qm9_splits(n_train: int = QM9_TRAIN, n_validation: int = QM9_VALIDATION,
               frame: pd.DataFrame | None = None) -> tuple[list[Task], pd.DataFrame, pd.DataFrame, dict]:
    """Tasks, standardised train/validation frames (``text``, ``label_<target>``) and each target's (mean, sd)."""
    frame = load_qm9_frame() if frame is None else frame
    if n_train + n_validation > len(frame):
        raise ValueError(f"QM9 subset of {n_train} + {n_validation} molecules exceeds the {len(frame)} available.")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(frame))
    train = frame.iloc[order[:n_train]].reset_index(drop=True)
    validation = frame.iloc[order[n_train:n_train + n_validation]].reset_index(drop=True)
    scale = {name: (float(train[col].mean()), float(train[col].std(ddof=0))) for name, col in QM9_TARGETS.items()}

    def standardised(part: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame({"text": part["SMILES"].astype(str)})
        for name, col in QM9_TARGETS.items():
            mean, sd = scale[name]
            out[f"label_{name}"] = ((part[col] - mean) / sd).astype(np.float32)
        return out

    tasks = [Task(name, TaskKind.REGRESSION, metrics=["mae"]) for name in QM9_TARGETS]
    return tasks, standardised(train), standardised(validation), scale
