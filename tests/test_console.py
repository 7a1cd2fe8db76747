"""The hunting console over a store filled by the real pipeline, served by `ttpsensor console`
and driven over HTTP and in a real headless Chromium (Debian's chromium and chromium-driver,
through Selenium). Screenshots of each page go to out/console-screenshots/."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from collector.deliver import LocalDelivery
from collector.store import Store
from common import bench, qlog, ttphash
from common.spool import Spool
from tests.conftest import (ROOT, free_port, not_listening, process_family, require,
                            seed_qlog_example, ttpsensor_command)
from tests.sigma_rules import rule_yaml, selection, write_rules

CORPUS = ROOT.parent / "shared" / "corpus" / "laurel" / "proc-trace-dpkg-l.txt"
SCREENSHOTS = ROOT / "out" / "console-screenshots"
HOSTILE_SCRIPT = "<script>document.title='pwned'</script>"
HOSTILE_ATTRIBUTE = '"onmouseover="document.title=\'pwned\'" x="'


def _hostile_event() -> dict:
    """A command line an attacker chose: markup, an attribute breakout and bytes that are not
    UTF-8 (the sensor keeps them as bytes; they are shown in percent form)."""
    event = copy.deepcopy(bench.varied_events(1, seed=99)[0])
    event["host"]["name"] = "alpha"
    process = event["process"]
    process["executable"] = "/tmp/evil"
    process["args"] = ["/tmp/evil", HOSTILE_SCRIPT, HOSTILE_ATTRIBUTE, b"\xff\xferaw"]
    process["command_line"] = b"/tmp/evil " + HOSTILE_SCRIPT.encode() + b" " + \
        HOSTILE_ATTRIBUTE.encode() + b" \xff\xferaw"
    process["user"] = {"id": "1000", "name": "mallory"}
    ttphash.attach(event)
    return event


def _generated() -> list[dict]:
    """Two Linux hosts and a Windows host: a parent and its children on alpha (so the
    tree has depth), a fleet of varied events on alpha and beta, the seed's Windows event."""
    events = []
    for i, event in enumerate(bench.varied_events(60, seed=5)):
        event["host"]["name"] = "alpha" if i % 2 else "beta"
        events.append(event)
    events += process_family("alpha")
    windows = qlog.read_event(json.loads(seed_qlog_example()))
    windows["host"] = {"name": "winbox", "os": {"type": "windows"}}
    ttphash.attach(windows)
    events.append(windows)
    events.append(_hostile_event())
    # Where alpha's data has holes: a sensor status with lost counts, and a spool gap.
    from common.schema import new_event
    status = new_event("sensor_status", "ttpsensor", host={"name": "alpha"},
                       timestamp=1764410400.5)
    status["ttpsensor"] = {"status": {"kernel_lost": 17, "socket_overflows": 2}}
    gap = new_event("spool_gap", "ttpsensor", host={"name": "alpha"}, timestamp=1764410401.0)
    gap["ttpsensor"] = {"spool_gap": {"spool": "x", "first_seq": 100, "end_seq": 142,
                                      "events": 42, "reason": "disk full"}}
    return events + [status, gap]


SIGMA_RULES = {
    "curl.yml": rule_yaml("Curl on a host", selection("Image|endswith: /curl")),
    "notepad.yml": rule_yaml("Notepad started", selection("Image|endswith: '\\notepad.exe'"),
                             product="windows", level="critical"),
    # A title with markup: shown as text.
    "hostile.yml": rule_yaml("<b>Event handler</b> in argv",
                             selection("CommandLine|contains: onmouseover"), level="medium"),
}


def _sigma(directory: Path):
    """The console's rules, evaluated as the events are stored."""
    from collector.sigma.rules import load_rule_set
    rules = load_rule_set([write_rules(directory, SIGMA_RULES)], print)
    assert len(rules) == len(SIGMA_RULES)
    return rules


@pytest.fixture(scope="module")
def console_store(tmp_path_factory) -> dict:
    """A store filled as a collector fills it: a recorded audit log replayed by `ttpsensor
    audisp` into a spool, and a spool of generated events, each delivered into the store."""
    require(CORPUS.exists(), f"{CORPUS} (shared corpus) is missing")
    base = tmp_path_factory.mktemp("console")
    replayed = subprocess.run(
        ttpsensor_command() + ["audisp", "--format", "ecs", "--output",
                               f"spool:{base}/audit-spool", "--parse-error-log",
                               str(base / "errors.log")],
        input=CORPUS.read_bytes(), capture_output=True, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    store = Store(str(base / "store.sqlite"), rules=_sigma(base / "rules"))
    assert LocalDelivery(Spool(str(base / "audit-spool")), store, "sensor-vm").deliver() > 0
    generated = Spool(str(base / "generated-spool"))
    for event in _generated():
        generated.append(event)
    generated.close()
    assert LocalDelivery(Spool(str(base / "generated-spool")), store, "sensor-fleet").deliver()
    store.close()
    return {"store": str(base / "store.sqlite"), "base": base,
            "hostile": _hostile_event()["ttphash"]["value"]}


class Console:
    """`ttpsensor console` as a subprocess."""

    def __init__(self, store: str, *args: str, listen_host: str = "127.0.0.1",
                 token_file: str | None = None) -> None:
        self.port = free_port()
        self.token_file = token_file or f"{store}.token"
        self.proc = subprocess.Popen(
            ttpsensor_command() + ["console", "--store", store, "--listen",
                                   f"{listen_host}:{self.port}", "--token-file",
                                   self.token_file, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait(self) -> "Console":
        problem = not_listening(self.port, self.proc)
        assert problem is None, f"the console did not start: {problem}: " + (
            self.proc.stderr.read().decode() if self.proc.poll() is not None else "")
        return self

    @property
    def token(self) -> str:
        return Path(self.token_file).read_text().strip()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def console(console_store):
    served = Console(console_store["store"]).wait()
    yield served
    served.stop()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_the_token_file_is_private_and_every_page_answers(console, console_store) -> None:
    assert os.stat(console.token_file).st_mode & 0o777 == 0o600
    base = f"http://127.0.0.1:{console.port}"
    with httpx.Client(base_url=base) as web:
        for path in ("/today", "/list/rare", "/list/top", "/list/unlisted", "/hosts",
                     "/host/alpha", "/host/vm", "/search?argument=script", "/login",
                     "/sigma", "/sigma?level=critical&rule=x&host=alpha&since=2000",
                     f"/hash/{console_store['hostile']}"):
            page = web.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert "script-src" not in page.headers["content-security-policy"]  # none at all
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
            assert "<script" not in page.text.lower().replace("&lt;script", "")
        assert web.get("/hash/0000").status_code == 404
        # A page elsewhere that rebinds its own name to 127.0.0.1 gets nothing.
        assert web.get("/today", headers={"Host": f"evil.example:{console.port}"}
                       ).status_code == 400
        assert web.get("/today", headers={"Host": f"localhost:{console.port}"}
                       ).status_code == 200


def test_hostile_argv_is_escaped_and_shown_in_percent_form(console, console_store) -> None:
    base = f"http://127.0.0.1:{console.port}"
    with httpx.Client(base_url=base) as web:
        for path in (f"/hash/{console_store['hostile']}", "/search?user=mallory",
                     "/host/alpha", "/list/unlisted?user=mallory"):
            html = web.get(path).text
            assert HOSTILE_SCRIPT not in html, path
            assert "&lt;script&gt;document.title=" in html, path
            assert 'onmouseover="document' not in html, path
            assert "&#34;onmouseover=&#34;" in html or "&quot;onmouseover=&quot;" in html, path
            assert "%FF%FEraw" in html, path   # the bytes that are not UTF-8, in percent form
        holes = web.get("/host/alpha?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z")
        assert "42 events lost in the spool (disk full)" in holes.text
        assert "kernel_lost" in holes.text and "17" in holes.text


def test_allow_list_changes_need_a_login_and_a_fresh_form(console, console_store) -> None:
    base = f"http://127.0.0.1:{console.port}"
    target = console_store["hostile"]
    with httpx.Client(base_url=base) as web:
        assert 'action="/hash/' not in web.get(f"/hash/{target}").text   # no form offered
        refused = web.post(f"/hash/{target}/allow", data={"csrf": _csrf(web.get("/login").text),
                                                           "reason": "no login"})
        assert refused.status_code == 401
        login = web.get("/login").text
        wrong = web.post("/login", data={"csrf": _csrf(login), "token": "guess"})
        assert wrong.status_code == 401
        no_csrf = web.post("/login", data={"token": console.token})
        assert no_csrf.status_code == 403
        done = web.post("/login", data={"csrf": _csrf(web.get("/login").text),
                                        "token": console.token, "name": "ann"})
        assert done.status_code == 303
        stale = web.post(f"/hash/{target}/allow", data={"csrf": "stale", "reason": "x"})
        assert stale.status_code == 403
    store = Store(console_store["store"], readonly=True)
    assert store.show(target)["allowed"] is None      # nothing changed by any of those
    store.close()


def test_a_console_beyond_loopback_needs_tls_and_refuses_the_unauthenticated(
        console_store, tmp_path) -> None:
    plain = Console(console_store["store"], listen_host="0.0.0.0")
    assert plain.proc.wait(timeout=60) == 2
    assert "without TLS" in plain.proc.stderr.read().decode()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    served = Console(console_store["store"], "--tls-cert", str(tmp_path / "cert.pem"),
                     "--tls-key", str(tmp_path / "key.pem"), listen_host="0.0.0.0",
                     token_file=str(tmp_path / "token")).wait()
    try:
        trust = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        with httpx.Client(base_url=f"https://127.0.0.1:{served.port}", verify=trust) as web:
            page = web.get("/today")
            assert page.status_code == 303 and page.headers["location"] == "/login"
            assert web.get(f"/hash/{console_store['hostile']}").status_code == 303
            assert web.post(f"/hash/{console_store['hostile']}/allow",
                            data={"reason": "x"}).status_code == 401
            login = web.get("/login")
            assert login.status_code == 200
            done = web.post("/login", data={"csrf": _csrf(login.text),
                                            "token": served.token, "name": "ann"})
            assert done.status_code == 303
            assert web.get("/today").status_code == 200   # the session cookie, over TLS
            assert "secure" in done.headers["set-cookie"].lower()
    finally:
        served.stop()


# --- a real browser ----------------------------------------------------------------------

@pytest.fixture
def browser():
    require(shutil.which("chromium") is not None and shutil.which("chromedriver") is not None,
            "Debian's chromium and chromium-driver are needed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_a_hunter_in_chromium(console, console_store, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.support.ui import Select, WebDriverWait
    base = f"http://127.0.0.1:{console.port}"
    browser.get(f"{base}/today?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z")
    assert "New TTPHashes" in browser.page_source
    _shot(browser, "1-today")
    # Filter by host.
    Select(browser.find_element(By.NAME, "host")).select_by_value("winbox")
    browser.find_element(By.ID, "apply").click()
    WebDriverWait(browser, 30).until(lambda b: "host=winbox" in b.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.hashes tbody tr td.hash a")
    assert len(rows) == 1 and "host=winbox" in browser.current_url
    _shot(browser, "2-today-winbox")
    # Open the hash: its canonical input is there, and it is the TTPHash's input.
    rows[0].click()
    WebDriverWait(browser, 30).until(lambda b: "/hash/" in b.current_url)
    value = browser.find_element(By.ID, "ttphash").text
    canonical = browser.find_element(By.ID, "canonical").text
    import hashlib
    assert hashlib.sha256(canonical.encode("utf-8")).hexdigest().upper() == value
    _shot(browser, "3-hash")
    # Log in and allow-list it with a reason; it leaves "not allow-listed".
    browser.get(f"{base}/list/unlisted?os=windows")
    assert value[:16] in browser.page_source
    browser.get(f"{base}/login")
    browser.find_element(By.ID, "name").send_keys("ann")
    browser.find_element(By.ID, "token").send_keys(console.token)
    browser.find_element(By.ID, "login").click()
    # A click submits; the browser then navigates on its own time: wait for where it lands.
    WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith("/today")
                                     and "ann (token)" in b.page_source)
    browser.get(f"{base}/hash/{value}")
    browser.find_element(By.ID, "reason").send_keys("Notepad from Explorer is expected")
    browser.find_element(By.ID, "change").click()
    WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,
                                                   NoSuchElementException)).until(
        lambda b: "Notepad from Explorer is expected" in b.find_element(By.ID, "allowed").text)
    assert "ann (token)" in browser.page_source          # who, in the audit log
    _shot(browser, "4-allowed")
    browser.get(f"{base}/list/unlisted?os=windows")
    assert value[:16] not in browser.page_source
    # The host's process tree: bash with its two children; follow a node to its TTPHash.
    browser.get(f"{base}/host/alpha?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z")
    trees = browser.find_elements(By.CSS_SELECTOR, ".tree > details")
    bash = next(t for t in trees if "/usr/bin/bash" in t.text)
    children = bash.find_elements(By.CSS_SELECTOR, ":scope > details")
    assert sorted(c.find_element(By.CSS_SELECTOR, ".exe").text for c in children) == [
        "/usr/bin/curl", "/usr/bin/tar"]
    _shot(browser, "5-host-tree")
    bash.find_element(By.CSS_SELECTOR, ":scope > summary").click()     # collapse
    assert not children[0].is_displayed()
    link = bash.find_element(By.CSS_SELECTOR, ":scope > summary a.hash")
    target = link.get_attribute("href")
    link.click()
    WebDriverWait(browser, 30).until(lambda b: b.current_url == target)
    assert "Canonical input" in browser.page_source
    # Its children are linked from its page.
    assert len(browser.find_elements(By.CSS_SELECTOR, ".relatives a")) == 2
    _shot(browser, "6-followed")
    # The hostile command line: shown as text, nothing ran.
    browser.get(f"{base}/search?user=mallory")
    assert browser.title != "pwned" and HOSTILE_SCRIPT in browser.page_source.replace(
        "&lt;", "<").replace("&gt;", ">")
    assert "%FF%FEraw" in browser.find_element(By.CSS_SELECTOR, "td.cmd").text
    _shot(browser, "7-hostile")
    # Sigma matches: all three rules matched; narrowed to critical, the Windows one, which
    # links to its TTPHash (allow-listed above: the match is shown as allow-listed).
    browser.find_element(By.LINK_TEXT, "Sigma").click()
    WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith("/sigma")
                                     and b.find_elements(By.ID, "matches"))
    titles = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#matches tbody td a")}
    assert {"Curl on a host", "Notepad started", "<b>Event handler</b> in argv"} <= titles
    _shot(browser, "8-sigma")
    Select(browser.find_element(By.NAME, "level")).select_by_value("critical")
    browser.find_element(By.ID, "apply").click()
    # Wait for the narrowed page itself, not only its address (a busy machine renders late).
    WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: "level=critical" in b.current_url
        and len(b.find_elements(By.CSS_SELECTOR, "#matches tbody tr")) == 1)
    [row] = browser.find_elements(By.CSS_SELECTOR, "#matches tbody tr")
    assert "Notepad started" in row.text and row.get_attribute("class") == "allowed"
    target = row.find_element(By.CSS_SELECTOR, "td.hash a").get_attribute("href")
    browser.get(target)
    WebDriverWait(browser, 30).until(lambda b: "/hash/" in b.current_url)
    assert browser.find_element(By.ID, "ttphash").text == value
    assert "Notepad started" in browser.find_element(By.ID, "hash-sigma").text
    _shot(browser, "9-hash-sigma")


def test_the_console_questions_on_sqlite_and_postgresql(store_location) -> None:
    """Every page's query on both stores, with the relations the pages show."""
    from collector.console.hunting import Filters, Hunt
    store = Store(store_location, rules=_sigma(Path(tempfile.mkdtemp(prefix="ttp-rules-"))))
    events = _generated()
    store.ingest("spool-a", 0, events, "sensor")
    hunt = Hunt(store)
    everything = Filters(since="2000-01-01T00:00:00Z", until="2100-01-01T00:00:00Z")
    first, second = hunt.today(everything), hunt.today(everything, page=2)
    assert first.more and not second.more                      # pages of 50
    assert len(first.rows) + len(second.rows) == len({e["ttphash"]["value"] for e in events
                                                      if "ttphash" in e})
    assert [r["os"] for r in hunt.today(Filters(os="windows", since="2000",
                                                until="2100")).rows] == ["windows"]
    hostile = next(e for e in events if e.get("process", {}).get("executable") == "/tmp/evil")
    [row] = hunt.search(Filters(argument="ONMOUSEOVER")).rows     # any case
    assert row["ttphash"] == hostile["ttphash"]["value"] and "%FF%FEraw" in row["command_line"]
    assert hunt.search(Filters(prefix=row["ttphash"][:6].lower())).rows[0]["ttphash"] == \
        row["ttphash"]
    # What a hunter types is taken literally: LIKE's wildcards match only themselves.
    assert hunt.search(Filters(executable="/usr/bin/_")).rows == []
    assert hunt.search(Filters(executable="/usr/bin/%")).rows == []
    assert hunt.search(Filters(executable="/usr/bin/")).rows
    assert {r["ttphash"] for r in hunt.search(Filters(host="winbox")).rows} == {
        events[-4]["ttphash"]["value"]}
    shell = next(e for e in events if e.get("process", {}).get("executable") == "/usr/bin/bash")
    detail = hunt.detail(shell["ttphash"]["value"])
    assert len(detail.children) == 2 and detail.canonical is not None
    child = hunt.detail(detail.children[0]["ttphash"])
    assert [p["ttphash"] for p in child.parents] == [shell["ttphash"]["value"]]
    view = hunt.host("alpha", "2000", "2100")
    [bash] = [n for n in view.roots if n.event["process"]["executable"] == "/usr/bin/bash"]
    assert len(bash.children) == 2
    assert hunt.listing("top", sort="executable", descending=False).rows
    hunt.allow(row["ttphash"], "lab test", "ann (token)")
    assert row["ttphash"] not in {r["ttphash"] for r in hunt.listing(
        "unlisted", filters=Filters(user="mallory")).rows}
    hunt.revoke(row["ttphash"], "no longer", "bob (token)")
    log = hunt.detail(row["ttphash"]).log
    assert [(e["action"], e["who"]) for e in log] == [("revoke", "bob (token)"),
                                                      ("allow", "ann (token)")]
    # Sigma matches: the page's filters, and each TTPHash's rules on its page.
    matches = hunt.sigma("", "", "", "")
    assert sorted(m["title"] for m in matches.rows) == [
        "<b>Event handler</b> in argv", "Curl on a host", "Notepad started"]
    [critical] = hunt.sigma("critical", "", "", "").rows
    assert critical["host"] == "winbox" and critical["ttphash"] == events[-4]["ttphash"]["value"]
    assert [m["title"] for m in hunt.sigma("", "Curl on a host", "alpha", "2000").rows] == [
        "Curl on a host"]
    assert hunt.sigma("", "", "beta", "").rows == []
    assert [m["title"] for m in hunt.detail(critical["ttphash"]).sigma] == ["Notepad started"]
    store.close()


def test_client_certificates_of_the_lab_pki_authenticate_a_remote_console(
        console_store, tmp_path) -> None:
    pki = tmp_path / "pki"
    made = subprocess.run(ttpsensor_command() + ["pki", "init", str(pki), "--sensor", "hunter"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    served = Console(console_store["store"], "--tls-cert", str(pki / "collector.crt"),
                     "--tls-key", str(pki / "collector.key"), "--client-ca",
                     str(pki / "ca.crt"), listen_host="0.0.0.0",
                     token_file=str(tmp_path / "token")).wait()
    try:
        trust = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        trust.load_cert_chain(str(pki / "hunter.crt"), str(pki / "hunter.key"))
        with httpx.Client(base_url=f"https://127.0.0.1:{served.port}", verify=trust) as web:
            assert web.get("/today").status_code == 200          # no login: the certificate
            page = web.get(f"/hash/{console_store['hostile']}")
            assert 'name="reason"' in page.text                  # and it may change the list
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with httpx.Client(base_url=f"https://127.0.0.1:{served.port}",
                          verify=anonymous) as web, pytest.raises(httpx.HTTPError):
            web.get("/today")                                     # no certificate: no TLS
    finally:
        served.stop()


def test_a_collector_serves_the_console_beside_itself(console_store, tmp_path) -> None:
    import signal
    pki = tmp_path / "pki"
    subprocess.run(ttpsensor_command() + ["pki", "init", str(pki)], check=True,
                   capture_output=True)
    store = tmp_path / "collector.sqlite"
    shutil.copy(console_store["store"], store)
    port, console_port = free_port(), free_port()
    collector = subprocess.Popen(
        ttpsensor_command() + ["collect", "--listen", f"127.0.0.1:{port}", "--cert",
                               str(pki / "collector.crt"), "--key", str(pki / "collector.key"),
                               "--ca", str(pki / "ca.crt"), "--store", str(store),
                               "--console", f"127.0.0.1:{console_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        problem = not_listening(console_port, collector)
        assert problem is None, f"{problem}: " + (
            collector.stderr.read().decode() if collector.poll() is not None else "")
        page = httpx.get(f"http://127.0.0.1:{console_port}/list/top", timeout=30)
        assert page.status_code == 200 and "Top" in page.text
        assert (tmp_path / "console.token").stat().st_mode & 0o777 == 0o600
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(timeout=30) == 0
    refused = subprocess.run(ttpsensor_command() + [
        "collect", "--cert", str(pki / "collector.crt"), "--key", str(pki / "collector.key"),
        "--ca", str(pki / "ca.crt"), "--store", str(store), "--console", "0.0.0.0:8731"],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "loopback only" in refused.stderr


def test_a_time_a_sensor_garbled_does_not_break_a_page(tmp_path) -> None:
    from starlette.testclient import TestClient

    from collector.console.app import make_app
    from collector.console.security import Access
    store = Store(str(tmp_path / "store.sqlite"))
    event = copy.deepcopy(bench.varied_events(1)[0])
    event["@timestamp"] = "not a time"        # what a hostile or broken sensor may send
    store.ingest("spool", 0, [event], "sensor")
    with TestClient(make_app(store, Access(open_reading=True, token=None, tls=False))) as web:
        for path in ("/today", f"/host/{event['host']['name']}", "/list/top"):
            assert web.get(path).status_code == 200, path
