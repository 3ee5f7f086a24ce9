"""The daemon's web UI in a real browser (headless Debian chromium, selenium), against a
``pytorrent daemon`` process fed by a libtorrent seed, all on loopback.

What the page shows is checked through its stable hooks (``data-hash`` rows,
``data-field`` cells, ``data-action`` buttons, the ``input[type=file]``); what it did is
checked from outside, with ``transmission-remote`` and the RPC itself.
"""

from __future__ import annotations

import base64
import json
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.swarm_helpers import free_port, make_payload, make_torrent
from tests.interop.conftest import need
from tests.interop.peers import free_ports
from tests.interop.test_daemon_transmission_remote import DaemonProcess, daemon_process
from tests.libtorrent_settings import lt_add, lt_session
from tests.polling import wait_until_blocking
from torrent.create import create
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.slow,
    pytest.mark.interop,
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which("transmission-remote") is None, reason="transmission-remote is not installed"
    ),
]

XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_COMMENT = '<script>window.pwned = "script"</script><img src=x onerror="window.pwned = \'img\'">'


def rpc(d: DaemonProcess, method: str, **arguments: Any) -> dict[str, Any]:
    """Call the daemon's RPC (with the 409 handshake); the ``arguments`` of a success."""
    url = f"http://{d.rpc}/transmission/rpc"
    body = json.dumps({"method": method, "arguments": arguments}).encode()
    session_id = ""
    for _ in range(2):
        request = urllib.request.Request(
            url, data=body, headers={"X-Transmission-Session-Id": session_id}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
            session_id = exc.headers["X-Transmission-Session-Id"]
            continue
        assert answer["result"] == "success", answer
        out: dict[str, Any] = answer["arguments"]
        return out
    raise AssertionError("the 409 handshake did not settle")


def status_of(d: DaemonProcess, info_hash: str) -> int:
    [t] = rpc(d, "torrent-get", ids=[info_hash], fields=["status"])["torrents"]
    return int(t["status"])


class Page:
    """The web UI in ``driver``, read through its stable hooks."""

    def __init__(self, driver: Any) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.by = By

    def rows(self) -> list[Any]:
        return list(self.driver.find_elements(self.by.CSS_SELECTOR, "#torrents tbody tr[data-hash]"))

    def row(self, info_hash: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, f'tr[data-hash="{info_hash}"]')

    def field(self, info_hash: str, name: str) -> str:
        """The text of a row's ``data-field`` cell ("" while the row is not there)."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        try:
            cell = self.row(info_hash).find_element(self.by.CSS_SELECTOR, f'[data-field="{name}"]')
            return str(cell.text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def wait_field(
        self, info_hash: str, name: str, want: Callable[[str], bool], what: str, timeout_s: float = 30
    ) -> None:
        seen: list[str] = []

        def ok() -> bool:
            seen.append(self.field(info_hash, name))
            return want(seen[-1])

        try:
            wait_until_blocking(ok, timeout_s=timeout_s, interval_s=0.1, what=what)
        except pytest.fail.Exception:
            raise AssertionError(f"{what}: {name} went through {sorted(set(seen))}") from None

    def click_row_action(self, info_hash: str, action: str) -> None:
        button = self.row(info_hash).find_element(self.by.CSS_SELECTOR, f'button[data-action="{action}"]')
        wait_until_blocking(button.is_enabled, timeout_s=10, what=f"the {action} button to be enabled")
        button.click()

    def css(self, selector: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, selector)

    def visible(self, selector: str) -> bool:
        found = self.driver.find_elements(self.by.CSS_SELECTOR, selector)
        return bool(found) and bool(found[0].is_displayed())

    def toasts(self) -> list[str]:
        return [str(t.text) for t in self.driver.find_elements(self.by.CSS_SELECTOR, "#toasts .toast")]


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_webui_drives_the_daemon(tmp_path: Path, browser: Any, artifact: Callable[[str], Path]) -> None:
    need("libtorrent")
    import libtorrent as lt

    content = make_payload(
        tmp_path / "seed",
        "Field recordings",
        {"01 - Dawn chorus.flac": 900_000, "02 - Rain on tin.flac": 700_000, "cover.jpg": 120_000},
    )
    meta = create(
        content, piece_length=32 * 1024, comment="Recorded on loopback", created_by="pytorrent tests"
    )
    torrent = tmp_path / "field.torrent"
    torrent.write_bytes(meta.to_bytes())
    ih = meta.info_hash.hex()
    # The second torrent, added through the page: a name and comment that are HTML.
    xss_dir = tmp_path / "xss"
    make_payload(xss_dir, XSS_NAME, 50_000, seed=2)
    xss = create(
        xss_dir / XSS_NAME,
        piece_length=16 * 1024,
        comment=XSS_COMMENT,
        trackers=["http://127.0.0.1:9/announce"],
    )
    xss_torrent = tmp_path / "xss.torrent"
    xss_torrent.write_bytes(xss.to_bytes())
    xss_ih = xss.info_hash.hex()
    page = Page(browser)

    # Two more torrents, complete on disk, so the list looks like one in use.
    others = {}
    for i, (name, label) in enumerate((("Lecture notes.pdf", "study"), ("Public domain films", "films"))):
        files: dict[str, int] | int = 90_000 if name.endswith(".pdf") else {"a.mkv": 150_000, "b.mkv": 90_000}
        other = make_torrent(
            make_payload(tmp_path / "downloads", name, files, seed=10 + i), piece_length=16 * 1024
        )
        (tmp_path / f"other{i}.torrent").write_bytes(other.to_bytes())
        others[other.info_hash.hex()] = label

    with daemon_process(tmp_path) as d:
        for i, (other_ih, label) in enumerate(others.items()):
            assert "success" in d.remote("-a", str(tmp_path / f"other{i}.torrent"))
            rpc(d, "torrent-set", ids=[other_ih], labels=[label])
        # Slow enough to be seen downloading (and to put a curve in the rate graph).
        rpc(d, "session-set", **{"speed-limit-down": 150, "speed-limit-down-enabled": True})
        # The seed speaks MSE with RC4 only: the peers tab shows the connection encrypted.
        rc4_only = {
            "in_enc_policy": int(lt.enc_policy.forced),
            "out_enc_policy": int(lt.enc_policy.forced),
            "allowed_enc_level": int(lt.enc_level.rc4),
        }
        with lt_session(lt, **rc4_only) as seed_session:
            handle = lt_add(lt, seed_session, torrent, tmp_path / "seed")
            wait_until_blocking(lambda: handle.status().is_seeding, timeout_s=30, what="libtorrent seeding")
            browser.get(f"http://{d.rpc}/")
            assert browser.title == "pytorrent"
            assert "success" in d.remote("-a", str(torrent))
            rpc(d, "torrent-set", ids=[ih], labels=["music"])
            handle.connect_peer(("127.0.0.1", d.peer_port))

            page.wait_field(ih, "name", lambda t: t == "Field recordings", what="the row shows up")
            page.wait_field(ih, "state", lambda t: t == "Downloading", what="downloading")
            page.wait_field(
                ih, "progress", lambda t: t.endswith("%") and int(t[:-1]) >= 60, what="well under way"
            )
            browser.save_screenshot(str(artifact("list.png")))
            # The detail pane while it downloads: general info with the pieces map, peers.
            page.row(ih).find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
            page.css('[data-bulk="details"]').click()
            wait_until_blocking(
                lambda: page.css("[data-info='hash']").text == ih, timeout_s=10, what="the general tab"
            )
            assert page.css("[data-info='comment']").text == "Recorded on loopback"
            browser.save_screenshot(str(artifact("detail-general.png")))
            page.css("[data-tab='peers']").click()
            wait_until_blocking(
                lambda: "127.0.0.1:" in page.css("#detail .peers tbody").text, timeout_s=10, what="the seed"
            )
            assert page.css("#detail .peers tbody [data-field='encrypted']").text == "RC4"
            [peer] = rpc(d, "torrent-get", ids=[ih], fields=["peers"])["torrents"][0]["peers"]
            assert peer["isEncrypted"] is True
            assert "E" in peer["flagStr"]
            flags = page.css("#detail .peers tbody tr").find_elements(page.by.TAG_NAME, "td")[2]
            assert "E" in flags.text
            browser.save_screenshot(str(artifact("detail-peers.png")))

            page.wait_field(
                ih, "progress", lambda t: t == "100%", what="the download completes", timeout_s=60
            )
            page.wait_field(ih, "state", lambda t: t == "Seeding", what="seeding")
            assert status_of(d, ih) == 6
            page.css("[data-tab='files']").click()
            wait_until_blocking(
                lambda: len(browser.find_elements(page.by.CSS_SELECTOR, "#detail .files tbody tr")) == 3,
                timeout_s=10,
                what="three files listed",
            )
            wait_until_blocking(
                lambda: page.css("#detail .files tbody").text.count("100%") == 3,
                timeout_s=10,
                what="files done",
            )
            assert "01 - Dawn chorus.flac" in page.css("#detail .files tbody").text
            browser.save_screenshot(str(artifact("detail-files.png")))
            # The wanted and priority controls change the torrent over RPC.
            names = [
                f["name"] for f in rpc(d, "torrent-get", ids=[ih], fields=["files"])["torrents"][0]["files"]
            ]
            cover, dawn = (
                names.index("Field recordings/cover.jpg"),
                names.index("Field recordings/01 - Dawn chorus.flac"),
            )
            from selenium.webdriver.support.select import Select

            Select(page.css(f'#detail select[data-file="{dawn}"]')).select_by_value("1")
            page.css(f'#detail input[data-file="{cover}"]').click()

            def file_settings() -> tuple[int, int]:
                [t] = rpc(d, "torrent-get", ids=[ih], fields=["wanted", "priorities"])["torrents"]
                return t["wanted"][cover], t["priorities"][dawn]

            wait_until_blocking(lambda: file_settings() == (0, 1), timeout_s=10, what="unwanted and high")
            page.css(f'#detail input[data-file="{cover}"]').click()
            wait_until_blocking(lambda: file_settings() == (1, 1), timeout_s=10, what="wanted again")
            page.css("#detail [data-close]").click()
            page.wait_field(ih, "state", lambda t: t == "Seeding", what="seeding after the file changes")

            # Add the second torrent through the file input.
            page.css('[data-bulk="add"]').click()
            page.css("input[type=file]").send_keys(str(xss_torrent))
            page.css("#add-paused").click()
            page.css("#add-submit").click()
            wait_until_blocking(
                lambda: "onerror=alert(1)>" in d.remote("-l"), timeout_s=20, what="listed by -l"
            )
            page.wait_field(xss_ih, "name", lambda t: t == XSS_NAME, what="the name shows as text")
            xss_row = page.row(xss_ih)
            browser.save_screenshot(str(artifact("html-name-as-text.png")))
            assert xss_row.find_elements(page.by.TAG_NAME, "img") == []
            assert status_of(d, xss_ih) == 0  # added paused, as asked
            # Its comment (HTML too) in the detail pane, as text.
            xss_row.find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
            page.css('[data-bulk="details"]').click()
            page.css("[data-tab='general']").click()
            wait_until_blocking(
                lambda: page.css("[data-info='comment']").text == XSS_COMMENT,
                timeout_s=10,
                what="the comment as text",
            )
            assert browser.find_elements(page.by.CSS_SELECTOR, "#detail dd img, #detail dd script") == []
            assert browser.execute_script("return window.pwned === undefined") is True
            # Its tracker, unreachable on purpose, in the trackers tab.
            page.css("[data-tab='trackers']").click()
            wait_until_blocking(
                lambda: "http://127.0.0.1:9/announce" in page.css("#detail .trackers tbody").text,
                timeout_s=10,
                what="the tracker listed",
            )
            page.css("#detail [data-close]").click()
            # Had the name's onerror run, an alert would be open.
            from selenium.common.exceptions import NoAlertPresentException

            with pytest.raises(NoAlertPresentException):
                browser.switch_to.alert.text  # noqa: B018

            # Stop and start through the row's buttons; the RPC tells the state.
            page.click_row_action(ih, "stop")
            wait_until_blocking(lambda: status_of(d, ih) == 0, timeout_s=15, what="stopped over RPC")
            page.wait_field(ih, "state", lambda t: t == "Stopped", what="shown stopped")
            page.click_row_action(ih, "start")
            wait_until_blocking(lambda: status_of(d, ih) == 6, timeout_s=30, what="seeding again over RPC")
            page.wait_field(ih, "state", lambda t: t == "Seeding", what="shown seeding")

        # The seed is gone: spoil a piece on disk, verify from the page, see the loss.
        page.click_row_action(ih, "stop")
        wait_until_blocking(lambda: status_of(d, ih) == 0, timeout_s=15, what="stopped for the verify")
        spoiled = tmp_path / "downloads" / "Field recordings" / "02 - Rain on tin.flac"
        with open(spoiled, "r+b") as fh:
            fh.seek(100_000)
            fh.write(b"\0" * 16)
        page.click_row_action(ih, "verify")
        page.wait_field(
            ih, "progress", lambda t: t not in ("", "100%"), what="the verify found the bad piece"
        )
        # Verified while stopped: stopped again once the check is over.
        wait_until_blocking(lambda: status_of(d, ih) == 0, timeout_s=15, what="stopped after the verify")

        # Remove with its data, through the row's button and the dialog.
        page.click_row_action(ih, "remove")
        wait_until_blocking(lambda: page.visible("#remove-dialog"), timeout_s=5, what="the remove dialog")
        page.css("#remove-data").click()
        page.css("#remove-confirm").click()
        wait_until_blocking(lambda: "Field" not in d.remote("-l"), timeout_s=20, what="gone from -l")
        wait_until_blocking(
            lambda: not (tmp_path / "downloads" / "Field recordings").exists(),
            timeout_s=20,
            what="data deleted",
        )
        wait_until_blocking(lambda: len(page.rows()) == 3, timeout_s=10, what="three rows left")
        assert not any("failed" in t for t in page.toasts()), page.toasts()

        errors = console_errors(browser)
        assert errors == [], errors


def _names(page: Page) -> list[str]:
    """The drawn rows' names, read in one script so a repaint cannot stale them midway."""
    names = page.driver.execute_script(
        "return Array.from(document.querySelectorAll("
        "'#torrents tbody tr[data-hash] [data-field=\"name\"]'), c => c.innerText.trim())"
    )
    return [str(n) for n in names]


def _keys(browser: Any, *keys: str, ctrl: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    chain = ActionChains(browser)
    if ctrl:
        chain.key_down(Keys.CONTROL)
    for key in keys:
        chain.send_keys(key)
    if ctrl:
        chain.key_up(Keys.CONTROL)
    chain.perform()


def test_webui_sorting_filters_keyboard_settings_failures_and_small_screen(
    tmp_path: Path, browser: Any, artifact: Callable[[str], Path]
) -> None:
    from selenium.webdriver.common.keys import Keys

    downloads = tmp_path / "downloads"
    hashes = {}
    for i, name in enumerate(("beta.bin", "alpha.bin", "gamma.bin")):
        meta = make_torrent(
            make_payload(downloads, name, 60_000 + i * 10_000, seed=i), piece_length=16 * 1024
        )
        path = tmp_path / f"{name}.torrent"
        path.write_bytes(meta.to_bytes())
        hashes[name] = meta.info_hash.hex()
    page = Page(browser)
    with daemon_process(tmp_path) as d:
        for name in hashes:
            assert "success" in d.remote("-a", str(tmp_path / f"{name}.torrent"))
        browser.get(f"http://{d.rpc}/")
        for ih in hashes.values():
            page.wait_field(ih, "state", lambda t: t == "Seeding", what="checked and seeding")

        # Sortable columns: by name, then the other way.
        page.css('th[data-sort="name"] button').click()
        wait_until_blocking(lambda: _names(page) == ["alpha.bin", "beta.bin", "gamma.bin"], what="sorted a-z")
        page.css('th[data-sort="name"] button').click()
        wait_until_blocking(lambda: _names(page) == ["gamma.bin", "beta.bin", "alpha.bin"], what="sorted z-a")
        # Search by name.
        page.css("#search").send_keys("alp")
        wait_until_blocking(lambda: _names(page) == ["alpha.bin"], what="search finds alpha")
        page.css("#search").send_keys(Keys.BACKSPACE * 3, Keys.ESCAPE)

        # Keyboard: select everything, label it; then one torrent gets its own label.
        wait_until_blocking(lambda: len(page.rows()) == 3, what="search cleared")
        _keys(browser, "a", ctrl=True)
        _keys(browser, "l")
        wait_until_blocking(lambda: page.visible("#label-dialog"), timeout_s=5, what="the label dialog")
        page.css("#label-input").send_keys("music", Keys.ENTER)
        wait_until_blocking(
            lambda: (
                [t["labels"] for t in rpc(d, "torrent-get", fields=["labels"])["torrents"]] == [["music"]] * 3
            ),
            what="labelled over RPC",
        )
        page.row(hashes["beta.bin"]).find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
        _keys(browser, "l")
        page.css("#label-input").clear()
        page.css("#label-input").send_keys("talk, music", Keys.ENTER)
        wait_until_blocking(
            lambda: (
                rpc(d, "torrent-get", ids=[hashes["beta.bin"]], fields=["labels"])["torrents"][0]["labels"]
                == ["talk", "music"]
            ),
            what="beta relabelled",
        )
        from selenium.webdriver.support.select import Select

        wait_until_blocking(
            lambda: len(page.css("#label-filter").find_elements(page.by.TAG_NAME, "option")) == 3,
            what="the label filter knows both labels",
        )
        Select(page.css("#label-filter")).select_by_value("talk")
        wait_until_blocking(lambda: _names(page) == ["beta.bin"], what="filtered by label")
        Select(page.css("#label-filter")).select_by_value("")

        # The toolbar acts on the whole selection.
        def statuses() -> list[int]:
            return [int(t["status"]) for t in rpc(d, "torrent-get", fields=["status"])["torrents"]]

        page.css("#torrents thead .select-all").click()
        wait_until_blocking(lambda: page.css("#selection-count").text == "3 selected", what="all selected")
        page.css('[data-bulk="stop"]').click()
        wait_until_blocking(lambda: statuses() == [0, 0, 0], what="all three stopped")
        page.css('[data-bulk="start"]').click()
        wait_until_blocking(lambda: statuses() == [6, 6, 6], timeout_s=30, what="all three seeding")
        for ih in hashes.values():
            page.wait_field(ih, "state", lambda t: t == "Seeding", what="shown seeding again")

        # Stop and start from the keyboard; filter by state.
        page.row(hashes["alpha.bin"]).find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
        _keys(browser, "p")
        wait_until_blocking(lambda: status_of(d, hashes["alpha.bin"]) == 0, what="p stopped it")
        Select(page.css("#state-filter")).select_by_value("stopped")
        wait_until_blocking(lambda: _names(page) == ["alpha.bin"], what="only the stopped one")
        Select(page.css("#state-filter")).select_by_value("all")
        page.row(hashes["alpha.bin"]).find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
        _keys(browser, "s")
        wait_until_blocking(lambda: status_of(d, hashes["alpha.bin"]) == 6, timeout_s=20, what="s started it")
        page.wait_field(hashes["alpha.bin"], "state", lambda t: t == "Seeding", what="shown seeding")

        # A phone-sized screen: fewer columns, the detail pane over the list.
        browser.set_window_size(390, 844)
        row = page.row(hashes["gamma.bin"])
        wait_until_blocking(
            lambda: not row.find_element(page.by.CSS_SELECTOR, ".col-size").is_displayed(), what="narrow"
        )
        assert row.find_element(page.by.CSS_SELECTOR, '[data-field="progress"]').is_displayed()
        assert row.find_element(page.by.CSS_SELECTOR, '[data-field="name"]').is_displayed()
        browser.save_screenshot(str(artifact("phone-list.png")))
        row.find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
        _keys(browser, Keys.ENTER)
        wait_until_blocking(lambda: page.visible("#detail"), timeout_s=5, what="details open")
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert page.css("#detail").rect["width"] == width
        browser.save_screenshot(str(artifact("phone-detail.png")))
        _keys(browser, Keys.ESCAPE)
        wait_until_blocking(lambda: not page.visible("#detail"), timeout_s=5, what="details closed")
        browser.set_window_size(1280, 800)

        # Session: the turtle button, and a setting saved from the dialog.
        page.css("#alt-speed").click()
        wait_until_blocking(lambda: rpc(d, "session-get")["alt-speed-enabled"] is True, what="turtle on")
        wait_until_blocking(
            lambda: page.css("#alt-speed").get_attribute("aria-pressed") == "true", what="shown on"
        )
        _keys(browser, ",")
        wait_until_blocking(lambda: page.visible("#settings-dialog"), timeout_s=5, what="the settings dialog")
        wait_until_blocking(lambda: "free of" in page.css("#settings-free").text, what="free space shown")
        browser.save_screenshot(str(artifact("settings.png")))
        queue = page.css('[data-key="download-queue-size"]')
        queue.clear()
        queue.send_keys("7")
        # The alternative speed schedule: 22:30 to 06:15 on weekdays.
        assert page.css('[data-key="alt-speed-time-begin"]').get_attribute("value") == "09:00"
        page.css('[data-key="alt-speed-time-enabled"]').click()
        for key, value in (("alt-speed-time-begin", "22:30"), ("alt-speed-time-end", "06:15")):
            browser.execute_script(
                "arguments[0].value = arguments[1]", page.css(f'[data-key="{key}"]'), value
            )
        for day in ("1", "64"):  # Sunday and Saturday off
            page.css(f'[data-days] input[value="{day}"]').click()
        page.css("#settings-save").click()
        wait_until_blocking(lambda: rpc(d, "session-get")["download-queue-size"] == 7, what="setting saved")
        got = rpc(d, "session-get")
        assert [got[f"alt-speed-time-{k}"] for k in ("enabled", "begin", "end", "day")] == [
            True,
            1350,
            375,
            62,
        ]
        wait_until_blocking(lambda: not page.visible("#settings-dialog"), timeout_s=5, what="settings closed")

        # Move a torrent's data from the keyboard.
        page.row(hashes["beta.bin"]).find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
        _keys(browser, "m")
        wait_until_blocking(lambda: page.visible("#move-dialog"), timeout_s=5, what="the move dialog")
        page.css("#move-location").clear()
        page.css("#move-location").send_keys(str(tmp_path / "moved"), Keys.ENTER)
        wait_until_blocking(lambda: (tmp_path / "moved" / "beta.bin").is_file(), timeout_s=20, what="moved")
        [beta] = rpc(d, "torrent-get", ids=[hashes["beta.bin"]], fields=["downloadDir"])["torrents"]
        assert beta["downloadDir"] == str(tmp_path / "moved")
        assert not (downloads / "beta.bin").exists()

        # A failing action says why; the dialog stays open for another try.
        _keys(browser, "a")
        wait_until_blocking(lambda: page.visible("#add-dialog"), timeout_s=5, what="the add dialog")
        page.css("#add-links").send_keys("magnet:?xt=urn:btih:XYZ")
        page.css("#add-submit").click()
        wait_until_blocking(
            lambda: any("invalid or corrupt torrent file" in t for t in page.toasts()), what="the error told"
        )
        assert page.visible("#add-dialog")
        # A good magnet link from the same box.
        magnet_hash = "0123456789abcdef0123456789abcdef01234567"
        page.css("#add-links").clear()
        page.css("#add-links").send_keys(f"magnet:?xt=urn:btih:{magnet_hash}&dn=from+a+magnet")
        page.css("#add-submit").click()
        wait_until_blocking(lambda: not page.visible("#add-dialog"), timeout_s=10, what="the dialog closed")
        wait_until_blocking(lambda: "from a magnet" in d.remote("-l"), what="the magnet listed by -l")
        page.wait_field(
            magnet_hash, "state", lambda t: t == "Fetching metadata", what="fetching its metadata"
        )

        # Drag and drop a .torrent file onto the page (the drop event a file manager sends).
        dropped = make_torrent(make_payload(tmp_path / "elsewhere", "dropped.bin", 30_000, seed=9))
        browser.execute_script(
            """
            const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "dropped.torrent", {type: "application/x-bittorrent"}));
            for (const type of ["dragenter", "dragover", "drop"]) {
              document.body.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
            }
            """,
            base64.b64encode(dropped.to_bytes()).decode(),
        )
        wait_until_blocking(lambda: "dropped.bin" in d.remote("-l"), what="the dropped torrent listed by -l")
        page.wait_field(dropped.info_hash.hex(), "name", lambda t: t == "dropped.bin", what="its row")
        assert not page.visible("#drop-overlay")
        errors = console_errors(browser)
        assert errors == [], errors

        # The daemon goes away: the page says so.
        d.proc.terminate()
        assert d.proc.wait(timeout=30) == 0
        wait_until_blocking(lambda: page.visible("#banner"), timeout_s=15, what="the banner")
        assert page.css("#banner").text.startswith("Cannot reach the daemon")
        browser.save_screenshot(str(artifact("unreachable.png")))


def test_webui_behind_basic_auth(tmp_path: Path, browser: Any) -> None:
    downloads = tmp_path / "downloads"
    meta = make_torrent(make_payload(downloads, "private.bin", 40_000), piece_length=16 * 1024)
    (tmp_path / "private.torrent").write_bytes(meta.to_bytes())
    page = Page(browser)
    with daemon_process(tmp_path, "--rpc-username", "alice", "--rpc-password", "s3cret") as d:
        assert "success" in d.remote("-a", str(tmp_path / "private.torrent"))
        # Without credentials: the 401 page, no UI.
        browser.get(f"http://{d.rpc}/")
        assert browser.find_elements(page.by.CSS_SELECTOR, "#torrents") == []
        # With them (as a user's bookmark would carry them): the page and its RPC calls work.
        browser.get(f"http://alice:s3cret@{d.rpc}/")
        page.wait_field(meta.info_hash.hex(), "state", lambda t: t == "Seeding", what="listed and seeding")
        page.click_row_action(meta.info_hash.hex(), "stop")
        wait_until_blocking(lambda: "Stopped" in d.remote("-l"), what="stopped through the page")
        errors = [e for e in console_errors(browser) if "401" not in e["message"]]
        assert errors == [], errors


def test_webui_network_settings_apply_live(
    tmp_path: Path, browser: Any, artifact: Callable[[str], Path]
) -> None:
    """Listen port, encryption and the DHT/PEX/LPD/uTP switches, set from the page."""
    from selenium.webdriver.support.select import Select

    page = Page(browser)
    # Turned on, the DHT bootstraps from a loopback port nobody answers on.
    with daemon_process(tmp_path, "--dht-bootstrap", f"127.0.0.1:{free_port()}") as d:
        browser.get(f"http://{d.rpc}/")
        wait_until_blocking(lambda: bool(page.css("#version").text), what="the first poll")
        _keys(browser, ",")
        wait_until_blocking(lambda: page.visible("#settings-dialog"), timeout_s=5, what="the settings dialog")
        port_input = page.css('[data-key="peer-port"]')
        wait_until_blocking(
            lambda: port_input.get_attribute("value") == str(d.peer_port), what="the port shown"
        )
        assert port_input.is_enabled()
        # The daemon listens on the new port for TCP and UDP (uTP, the DHT): a port free
        # for TCP alone may be held for UDP, and the save would then fail.
        port = free_ports(1)[0]
        port_input.clear()
        port_input.send_keys(str(port))
        Select(page.css('select[data-key="encryption"]')).select_by_value("required")
        for key in ("dht-enabled", "utp-enabled", "pex-enabled"):
            page.css(f'input[data-key="{key}"]').click()  # DHT on; uTP and PEX off
        browser.save_screenshot(str(artifact("settings-network.png")))
        page.css("#settings-save").click()
        wait_until_blocking(
            lambda: not page.visible("#settings-dialog"), timeout_s=10, what="settings closed"
        )
        want = {
            "peer-port": port,
            "encryption": "required",
            "dht-enabled": True,
            "pex-enabled": False,
            "lpd-enabled": False,
            "utp-enabled": False,
        }
        wait_until_blocking(lambda: {k: rpc(d, "session-get")[k] for k in want} == want, what="applied")
        info = d.remote("-si")
        assert f"Listenport: {port}" in info
        assert "Encryption: required" in info
        assert "Distributed hash table enabled: Yes" in info
        # Reopened, the dialog shows what applies now.
        _keys(browser, ",")
        wait_until_blocking(lambda: page.visible("#settings-dialog"), timeout_s=5, what="the dialog again")
        assert page.css('[data-key="peer-port"]').get_attribute("value") == str(port)
        assert page.css('select[data-key="encryption"]').get_attribute("value") == "required"
        assert page.css('input[data-key="dht-enabled"]').is_selected()
        assert not page.css('input[data-key="utp-enabled"]').is_selected()
        # A port another socket holds (the RPC's own): the error is told, the dialog stays.
        page.css('[data-key="peer-port"]').clear()
        page.css('[data-key="peer-port"]').send_keys(d.rpc.rsplit(":", 1)[1])
        page.css("#settings-save").click()
        wait_until_blocking(
            lambda: any("Saving the settings failed" in t for t in page.toasts()), what="told"
        )
        assert page.visible("#settings-dialog")
        assert rpc(d, "session-get")["peer-port"] == port
        errors = console_errors(browser)
        assert errors == [], errors


def _tiny_torrent(i: int) -> bytes:
    """A one-piece torrent that needs no file to be made (its data is never on disk)."""
    info = {
        b"name": f"item {i:05d}.bin".encode(),
        b"length": 1000 + i,
        b"piece length": 16 * 1024,
        b"pieces": i.to_bytes(20, "big"),
    }
    return bencoding.encode({b"info": info})


def test_webui_lists_thousands_of_torrents_by_windows(
    tmp_path: Path, browser: Any, artifact: Callable[[str], Path]
) -> None:
    """3,000 torrents: the page keeps a window of rows in the document, and scrolling
    brings the others in."""
    from selenium.webdriver.common.keys import Keys

    n = 3000
    page = Page(browser)
    with daemon_process(tmp_path) as d:
        for i in range(n):
            rpc(d, "torrent-add", metainfo=base64.b64encode(_tiny_torrent(i)).decode(), paused=True)
        browser.get(f"http://{d.rpc}/")
        wait_until_blocking(
            lambda: page.css("#counts").text.startswith(f"{n} torrents"), timeout_s=60, what="all counted"
        )
        wait_until_blocking(lambda: bool(page.rows()), timeout_s=30, what="rows")
        # Queue order: the first added on top. Only a window of rows is in the document.
        assert _names(page)[0] == "item 00000.bin"
        assert len(page.rows()) < 120
        scroller = page.css("section.list")
        height = browser.execute_script("return arguments[0].scrollHeight", scroller)
        assert height > n * 20  # the spacers stand for the rows not drawn

        def scroll_to(fraction: float) -> None:
            browser.execute_script(
                "arguments[0].scrollTop = arguments[1] * arguments[0].scrollHeight", scroller, fraction
            )

        scroll_to(1.0)
        wait_until_blocking(
            lambda: "item 02999.bin" in _names(page), timeout_s=10, what="the last torrent drawn"
        )
        assert "item 00000.bin" not in _names(page)
        assert len(page.rows()) < 120
        browser.save_screenshot(str(artifact("thousands-end.png")))
        scroll_to(0.5)
        wait_until_blocking(lambda: "item 01500.bin" in _names(page), timeout_s=10, what="the middle drawn")
        # A row that came into view works like any other: select it, stop-start buttons.
        middle = _tiny_hash(1500)
        _click_name(page, middle)
        wait_until_blocking(lambda: page.css("#selection-count").text == "1 selected", what="selected")
        # Filters still see every torrent, drawn or not.
        page.css("#search").send_keys("item 02345")
        wait_until_blocking(lambda: _names(page) == ["item 02345.bin"], what="found by search")
        page.css("#search").send_keys(Keys.BACKSPACE * len("item 02345"))
        wait_until_blocking(lambda: len(page.rows()) > 1, what="the search cleared")
        # The list stays responsive: a poll of 3,000 rows repaints in well under a frame budget.
        took = browser.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const t0 = performance.now();
            document.querySelector("section.list").scrollTop += 5000;
            requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
            """
        )
        assert took < 500, took
        assert len(page.rows()) < 120
        errors = console_errors(browser)
        assert errors == [], errors


def _click_name(page: Page, info_hash: str) -> None:
    """Bring a row's name into view and click it; a repaint that replaced the row meanwhile
    is retried on the new one."""
    from selenium.common.exceptions import StaleElementReferenceException

    def click() -> bool:
        try:
            cell = page.row(info_hash).find_element(page.by.CSS_SELECTOR, '[data-field="name"]')
            page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
            page.row(info_hash).find_element(page.by.CSS_SELECTOR, '[data-field="name"]').click()
        except StaleElementReferenceException:
            return False
        return True

    wait_until_blocking(click, timeout_s=10, what="the row clicked")


def _tiny_hash(i: int) -> str:
    return Metainfo.from_bytes(_tiny_torrent(i)).info_hash.hex()
