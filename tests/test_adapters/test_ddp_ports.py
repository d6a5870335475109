"""Rendezvous ports and each data-parallel process's own GPU (adapters.ddp, adapters.mmcv_cuda),
without a GPU: the choices are plain functions of the machine's port range and the environment."""
from __future__ import annotations

import socket

from adapters.ddp import ephemeral_ports, free_port, rendezvous_candidates
from adapters.mmcv_cuda import own_device, own_index


def test_rendezvous_port_is_free_and_outside_the_ephemeral_range():
    ephemeral = ephemeral_ports()
    ports = {free_port() for _ in range(20)}
    assert not any(port in ephemeral for port in ports)
    assert len(ports) > 1  # drawn at random: concurrent jobs do not all try the same one
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # free: rank 0 can listen there


def test_port_range_from_the_kernel_file(tmp_path):
    custom = tmp_path / "ip_local_port_range"
    custom.write_text("40000\t50000\n")
    assert ephemeral_ports(str(custom)) == range(40000, 50001)
    assert ephemeral_ports(str(tmp_path / "missing")) == range(32768, 61000)  # Linux's default
    assert rendezvous_candidates(range(40000, 50001)) == range(10000, 40000)
    assert rendezvous_candidates(range(1024, 50001)) == range(50001, 65536)  # nothing below: above


def test_a_bare_cuda_is_the_process_own_gpu():
    assert own_index("1", visible=2, current=0) == 1  # rank 1 of a 2-GPU data-parallel job
    assert own_index(None, visible=2, current=1) == 1  # a single process: torch's current device
    assert own_index("3", visible=1, current=0) == 0  # one GPU per process (CUDA_VISIBLE_DEVICES)
    assert own_index("", visible=4, current=2) == 2
    assert own_device("cuda:1") == "cuda:1"
