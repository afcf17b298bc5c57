"""`sxpm run` chat in a pseudo-terminal, and -p through the model's chat template."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from sxpm.home import Home

pytestmark = pytest.mark.llama
pytest.importorskip("llama_cpp")
pexpect = pytest.importorskip("pexpect")


@pytest.fixture
def ready(home: Path, sample_dir: Path, registry_dir: Path) -> Home:
    from sxpm.artifacts.pack import pack
    from sxpm.ops.install import install

    h = Home(home)
    for name in ("tiny-llama", "chat-llama"):
        ref = h.parse_ref(f"oci:{registry_dir}/{name}:1.0.0")
        pack(h, "model", sample_dir / name, ref)
        install(h, ref)
    return h


def test_prompt_goes_through_the_models_chat_template(cli: Any, ready: Home) -> None:
    args = ["-p", "hi", "-n", "8", "--threads", "2", "--json"]
    chat = cli("run", "chat-llama", *args).json
    raw = cli("run", "chat-llama", *args, "--raw").json
    assert chat["template"] == "model" and raw["template"] == "raw"
    assert chat["text"].strip() and chat["text"] != raw["text"]
    system = cli("run", "chat-llama", *args, "--system", "be brief").json
    assert system["prompt"][0] == {"role": "system", "content": "be brief"}
    assert system["text"] != chat["text"]  # --system reaches the model
    # no template: plain completion and a one-line note, never an empty answer
    plain = cli("run", "tiny-llama", "-p", "hi", "-n", "8", "--threads", "2")
    assert plain.stdout.strip() and "no chat template" in plain.stderr
    # a prompt longer than the context: one clear error
    r = cli.fail("run", "chat-llama", "-p", "x" * 400, "--ctx", "64", "--threads", "2",
                 code=2)
    assert "context holds 64" in r.stderr


def spawn(cli: Any, *args: str) -> Any:
    child = pexpect.spawn(sys.executable, ["-m", "sxpm", "run", *args, "--threads", "2"],
                          cwd=str(cli.cwd), env=cli.env, encoding="utf-8", timeout=60)
    child.expect("chatting with")
    child.expect("> ")
    return child


def test_interactive_chat_commands(cli: Any, ready: Home) -> None:
    child = spawn(cli, "chat-llama", "-n", "6", "--system", "be brief")
    child.sendline("")  # an empty line does not quit
    child.expect("> ")
    child.sendline("hello")
    child.expect("> ")
    first = child.before.strip().splitlines()[-1]
    assert first.strip()
    child.sendline("/clear")
    child.expect("cleared")
    child.expect("> ")
    child.sendline("hello")
    child.expect("> ")
    assert child.before.strip().splitlines()[-1] == first  # same state after /clear
    child.sendline("/system talk like a pirate")
    child.expect("system message set")
    child.expect("> ")
    child.sendline('"""')
    child.sendline("two")
    child.sendline('lines"""')
    child.expect("> ")
    assert child.before.strip()
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_drops_old_turns_and_ctrl_c_stops_an_answer(cli: Any, ready: Home) -> None:
    child = spawn(cli, "tiny-llama", "-n", "16", "--ctx", "128")
    for i in range(6):
        child.sendline(f"turn {i} " + "w" * 20)
        child.expect("> ")
    child.sendline("last")
    index = child.expect(["dropped the", "> "])
    assert index == 0, "no note about dropped turns"
    child.expect("> ")
    child.sendintr()  # Ctrl-C at the prompt keeps the chat
    child.expect("/bye or Ctrl-D")
    child.sendline("still here")
    child.expect("> ")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
