# Copied from qiskit-community/qrmi, examples/qiskit_primitives/ibm/estimator.py (Apache-2.0), for qrmid's tests.
# Changed: the two `from qrmi.primitives ...` import lines now import from `qrmid.qrmi.primitives`.
#
# This code is part of Qiskit.
#
# (C) Copyright 2025 IBM. All Rights Reserved.
#
# This code is licensed under the Apache License, Version 2.0. You may
# obtain a copy of this license in the LICENSE.txt file in the root directory
# of this source tree or at http://www.apache.org/licenses/LICENSE-2.0.
#
# Any modifications or derivative works of this code must retain this
# copyright notice, and modified files need to carry a notice indicating
# that they have been altered from the originals.

"""EstimatorV2 example with IBM Direct Access QRMI"""

# pylint: disable=invalid-name
import random

from dotenv import load_dotenv
from qiskit.circuit.library import QAOAAnsatz
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qrmid.qrmi.primitives import QRMIService
from qrmid.qrmi.primitives.ibm import EstimatorV2, get_target

# Create QRMI
load_dotenv()
service = QRMIService()

resources = service.resources()
if len(resources) == 0:
    raise ValueError("No quantum resource is available.")

for res in resources:
    print(
        f"Available resource: id={res.resource_id()} type={res.resource_type()!s}"
    )

# Randomly select QR
qrmi = resources[random.randrange(len(resources))]
print(qrmi.metadata())

# Generate transpiler target from backend configuration & properties
target = get_target(qrmi)

# Create a circuit and an observable
# You need at least one circuit and one observable as inputs to the Estimator primitive.
entanglement = [tuple(edge) for edge in target.build_coupling_map().get_edges()]
observable = SparsePauliOp.from_sparse_list(
    [("ZZ", [i, j], 0.5) for i, j in entanglement],
    num_qubits=target.num_qubits,
)
circuit = QAOAAnsatz(observable, reps=2)
# the circuit is parametrized, so we will define the parameter values for execution
param_values = [0.1, 0.2, 0.3, 0.4]

print(f">>> Observable: {observable.paulis}")

# The circuit and observable need to be transformed to only use instructions
# supported by the QPU (referred to as instruction set architecture (ISA) circuits).
# We'll use the transpiler to do this.
pm = generate_preset_pass_manager(
    optimization_level=1,
    target=target,
)
isa_circuit = pm.run(circuit)
isa_observable = observable.apply_layout(isa_circuit.layout)
print(f">>> Circuit ops (ISA): {isa_circuit.count_ops()}")

# Initialize QRMI Estimator
options = {}
estimator = EstimatorV2(qrmi, options=options)

# Invoke the Estimator and get results
# Next, invoke the run() method to calculate expectation values for the input circuits
# and observables. The circuit, observable, and optional parameter value sets are
# input as primitive unified bloc (PUB) tuples.
job = estimator.run([(isa_circuit, isa_observable, param_values)])
print(f">>> Job ID: {job.job_id()}")
print(f">>> Job Status: {job.status()}")

result = job.result()
print(f">>> {result}")
print(f"  > Expectation value: {result[0].data.evs}")
print(f"  > Metadata: {result[0].metadata}")

if job.errored():
    print(qrmi.task_logs(job.job_id()))
