"""The machine record every ``corel-bench`` result carries: /proc/cpuinfo read into the short ISA list,
the one-line description, and the record read back from older results."""
from __future__ import annotations

import json

from corel_annotate.benchmarks.hardware import (Machine, isa_names, machine, markdown_line, parse_cpuinfo,
                                                record_of, with_machine_line)
from corel_annotate.benchmarks.report import write_json_and_markdown

# A Sapphire Rapids-like server: AVX-512 with VNNI and BF16, and AMX tiles (two processors listed).
SAPPHIRE = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx_vnni
bugs		: spectre_v1 spectre_v2

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx_vnni
"""

# This project's benchmark machine: AVX2, no AVX-512 (avx512 appears nowhere; "avx" alone is not AVX2).
EPYC = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC
flags		: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ht syscall nx mmxext lm sse3 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm sse4a bmi1 avx2 smep bmi2 rdseed adx clflushopt sha_ni xsaveopt
"""

# An older AVX-512 server with the pre-4.x kernel spelling of VNNI and no BF16 or AMX.
CASCADE = """model name	: Intel(R) Xeon(R) Gold 6248
flags		: sse sse2 avx avx2 avx512f avx512cd avx512bw avx512vl avx512vnni
"""


def test_sapphire_rapids_cpuinfo_reads_as_every_isa():
    model, flags = parse_cpuinfo(SAPPHIRE)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert isa_names(flags) == ["AVX2", "AVX-512", "VNNI", "BF16", "AMX"]
    m = machine(cpuinfo=SAPPHIRE)
    assert m.cpu == model and m.isa == ["AVX2", "AVX-512", "VNNI", "BF16", "AMX"]
    assert m.flags == ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                       "amx_tile", "amx_bf16", "amx_int8"]


def test_avx2_only_cpuinfo_reads_as_avx2_and_says_what_it_lacks():
    model, flags = parse_cpuinfo(EPYC)
    assert model == "AMD EPYC" and isa_names(flags) == ["AVX2"]
    m = machine("fp32", cpuinfo=EPYC)
    assert m.isa == ["AVX2"] and m.flags == ["avx2"]
    line = m.describe()
    assert line.startswith(f"AMD EPYC, {m.cores} ") and "AVX2 (no AVX-512, VNNI, BF16, AMX)" in line
    assert line.endswith("; precision fp32")
    assert isa_names(parse_cpuinfo(CASCADE)[1]) == ["AVX2", "AVX-512", "VNNI"]
    assert isa_names(parse_cpuinfo("model name\t: Some ARM\nFeatures\t: fp asimd crc32\n")[1]) == []


def test_describe_names_the_engines_and_the_cores_the_bench_could_use():
    m = Machine(cpu="AMD EPYC", cores=2, logical_cores=8, isa=[], flags=[],
                engines={"onnxruntime": "1.32.0", "openvino": "2026.4.1", "numpy": "1.26.4"})
    assert m.describe() == ("AMD EPYC, 2 of 8 cores, no AVX2, AVX-512, VNNI, BF16, AMX; "
                            "onnxruntime 1.32.0, OpenVINO 2026.4.1")


def test_this_machine_record_is_json_and_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, json; from corel_annotate.benchmarks.hardware import machine; "
            "d = machine().to_dict(); json.dumps(d); print('torch' in sys.modules, 'torch' in d['engines'], "
            "'onnxruntime' in d['engines'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]


def test_older_records_read_back_with_short_isa_names():
    old = {"cpu": "AMD EPYC", "cores": 2, "isa": ["avx2"], "engines": {"onnxruntime": "1.32.0"}}
    assert Machine.from_dict(old).isa == ["AVX2"]
    assert markdown_line(old) == "Machine: AMD EPYC, 2 cores, AVX2 (no AVX-512, VNNI, BF16, AMX); onnxruntime 1.32.0."
    kept = record_of({"machine": old}, precision="int8")
    assert kept["machine"]["cpu"] == "AMD EPYC" and kept["machine"]["precision"] == "int8"
    text = with_machine_line("| a |\n", old)
    assert text.endswith(markdown_line(old) + "\n") and with_machine_line(text, old) == text


def test_written_results_carry_the_record_and_the_line(tmp_path):
    json_path, md_path = write_json_and_markdown({"rows": []}, tmp_path, "r", "| table |\n")
    record = json.loads(json_path.read_text())["machine"]
    assert record["cpu"] and record["cores"] >= 1 and record["isa"] == machine().isa
    assert md_path.read_text().splitlines()[-1] == markdown_line(record)


def test_an_int8_bundle_on_onnxruntime_without_vnni_is_said_at_start_up():
    from corel_annotate.runtime.engines.isa import int8_without_vnni

    epyc, sapphire, cascade = (parse_cpuinfo(text)[1] for text in (EPYC, SAPPHIRE, CASCADE))
    line = int8_without_vnni("int8", "cpu", epyc)
    assert line is not None and "without VNNI (AVX2)" in line and "openvino" in line and "\n" not in line
    assert int8_without_vnni("int8", "cpu", sapphire) is None and int8_without_vnni("int8", "cpu", cascade) is None
    assert int8_without_vnni("int8", "openvino", epyc) is None    # OpenVINO runs int8 well everywhere
    assert int8_without_vnni("fp32", "cpu", epyc) is None and int8_without_vnni("int8", "cuda", epyc) is None
