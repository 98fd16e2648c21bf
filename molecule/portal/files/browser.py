# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) against the console
portal, for the portal scenario's verify (test code, runs on the client with the venv's Python).

Reads one JSON object on stdin, so no password reaches a command line:

  {"action": "password", "portal": "https://hv1:8443", "home": DIR, "user": U, "password": P,
   "download": [VM, ...], "serial": VM, "spice": VM, "vnc": VM, "disconnect": VM, "forgery": true}
      log in with the password form; the VMs listed; then, in this order and each when given: the
      requests a forger would send (forgery), each VM's "Open SPICE" button (the .vv saved into
      DIR/downloads), the VM's "Serial in the browser" page (the guest's line shows in the terminal,
      a typed word comes back: tests/guest_image.py's guest echoes), the "SPICE in the browser" and "VNC in
      the browser" pages (connected, the VM's screen on the canvas), the VM's "Disconnect everyone" button.
  {"action": "certificate", "portal": ..., "home": DIR, "download": [...]}
      the same after the login with the client certificate in DIR's NSS database (Chromium picks it
      without a prompt: the managed policy AutoSelectCertificateForUrls).
  {"action": "lockout", "portal": ..., "home": DIR, "user": U, "password": P, "failures": N}
      N wrong passwords, then the right one: the answers' messages.
  {"action": "follow", "portal": ..., "home": DIR, "user": U, "password": P, "spice": VM, "vnc": VM,
   "ready": FILE, "within": SECONDS}
      log in, open the VM's "SPICE in the browser" page and its "VNC in the browser" page (each in a window of
      its own, connected, the VM's screen on the canvas), write "ready" into FILE (the scenario migrates the VM
      then; anything else in FILE is why the pages did not open), and wait at most SECONDS until each page has
      opened its console again by itself (data-reconnects 1, connected, the screen on the canvas): the gap each
      page measured, from the relay's "moved" close to connected again.

DIR is the browser's HOME: Chromium reads DIR/.pki/nssdb (the cluster's CA, and for "certificate" a
person's certificate and key). Prints one JSON object; it holds the session cookie (for the scenario's
check that no log holds it) and never a password. Exits non-zero, with the reason on stderr, when the
portal does not behave: these are assertions, not only a driver.
"""

import http.server
import json
import os
import re
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException

CA_FILE = "/etc/vmconsole-scenario/cacert.pem"
WAIT = 20        # seconds a page or a download may take
CUT_WAIT = 60    # seconds a disconnect may take (the portal waits up to 30 s for every node's cut)


def fail(message):
    sys.stderr.write("browser.py: %s\n" % message)
    sys.exit(1)


def browser(home):
    """Chromium with HOME=home (its NSS database), downloads into home/downloads without a prompt."""
    downloads = os.path.join(home, "downloads")
    os.makedirs(downloads, exist_ok=True)
    for name in os.listdir(downloads):
        os.unlink(os.path.join(downloads, name))
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--user-data-dir=%s" % os.path.join(home, "profile"),
                     # Pages in other windows keep their timers (follow: a console that reconnects is not in front).
                     "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                     "--disable-backgrounding-occluded-windows"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {
        "download.default_directory": downloads,
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    env = dict(os.environ, HOME=home)
    service = Service(executable_path="/usr/bin/chromedriver", env=env)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(CUT_WAIT)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    return driver, downloads


def text_of(driver):
    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(what, predicate, seconds=WAIT):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            value = predicate()
        except WebDriverException:      # the page is being replaced (a POST that takes seconds): ask again
            value = None
        if value:
            return value
        time.sleep(0.2)
    fail("timed out waiting for %s" % what)


def vm_rows(driver):
    """{vm: {"node", "state", "consoles", "buttons"}} of the VM table on the page."""
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#vms tr[id^='vm-']"):
        cells = row.find_elements(By.TAG_NAME, "td")
        rows[cells[0].text] = dict(node=cells[1].text, state=cells[2].text, consoles=cells[3].text,
                                   buttons=[b.get_attribute("id") for b in row.find_elements(By.TAG_NAME, "button")])
    return rows


def session_state(driver):
    """The session cookie (HttpOnly, Secure, SameSite=Strict: checked) and the page's CSRF token."""
    cookies = [c for c in driver.get_cookies() if c["name"] == "vmc_session"]
    if len(cookies) != 1:
        fail("no session cookie after the login: %s" % [c["name"] for c in driver.get_cookies()])
    cookie = cookies[0]
    if not (cookie.get("httpOnly") and cookie.get("secure") and cookie.get("sameSite") == "Strict"):
        fail("the session cookie is not HttpOnly, Secure, SameSite=Strict: %s"
             % {k: cookie.get(k) for k in ("httpOnly", "secure", "sameSite")})
    csrf = driver.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    return cookie["value"], csrf


def download(driver, downloads, vm):
    """Click the VM's "Open SPICE" button; the saved .vv's path once Chromium has finished it."""
    driver.find_element(By.ID, "spice.vv-%s" % vm).click()
    path = os.path.join(downloads, "%s.vv" % vm)

    def done():
        names = os.listdir(downloads)
        return os.path.exists(path) and not any(n.endswith(".crdownload") for n in names) and os.path.getsize(path) > 0
    wait_for("Chromium to save %s.vv (folder: %s)" % (vm, os.listdir(downloads)), done)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if not text.startswith("[virt-viewer]"):
        fail("%s.vv is not a virt-viewer file" % vm)
    return path


def post(portal, path, cookie=None, fields=None, headers=None):
    """(status, content type) of a POST outside the browser, as a forger's or a script's request."""
    data = urllib.parse.urlencode(fields or {}).encode()
    request = urllib.request.Request(portal + path, data=data, method="POST", headers=dict(headers or {}))
    if cookie:
        request.add_header("Cookie", "vmc_session=" + cookie)
    context = ssl.create_default_context(cafile=CA_FILE)
    try:
        with urllib.request.urlopen(request, context=context, timeout=WAIT) as answer:
            return answer.status, answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", "")


def forgery(driver, portal, cookie, csrf, downloads):
    """A forger's requests, each refused; one request with everything right, accepted (the control)."""
    origin = {"Origin": portal}
    out = {
        "no CSRF token": post(portal, "/vms/vm1/spice.vv", cookie, {}, origin)[0],
        "wrong CSRF token": post(portal, "/vms/vm1/spice.vv", cookie, {"csrf": csrf[:-2] + "xx"}, origin)[0],
        "other origin": post(portal, "/vms/vm1/spice.vv", cookie, {"csrf": csrf},
                             {"Origin": "https://evil.example:8443"})[0],
        "cross-site fetch": post(portal, "/vms/vm1/spice.vv", cookie, {"csrf": csrf},
                                 {"Origin": portal, "Sec-Fetch-Site": "cross-site"})[0],
        "header token, same origin (control)": post(portal, "/api/v1/vms/vm1/spice.vv", cookie, {},
                                                    dict(origin, **{"X-CSRF-Token": csrf}))[0],
    }
    # A real cross-site form in the same browser: a page of another origin whose form posts to the
    # portal (as an attacker's page would). Chromium sends Sec-Fetch-Site: cross-site and no cookie.
    page = ('<!DOCTYPE html><html><body><form method="post" action="%s/vms/vm1/spice.vv">'
            '<input type="hidden" name="csrf" value="guess"><button id="go" type="submit">win</button>'
            '</form></body></html>' % portal).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass
    # Threads: Chromium opens a spare connection beside the one it uses and leaves it idle; a server of one thread
    # sat in it, and shutdown() below waited for Chromium to give it up (about 60 s).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver.get("http://127.0.0.1:%d/" % server.server_address[1])
        driver.find_element(By.ID, "go").click()
        wait_for("the portal's answer to the cross-site form", lambda: "Refused" in driver.title or "login" in driver.current_url)
        out["cross-site form in the browser"] = text_of(driver)
    finally:
        server.shutdown()
        server.server_close()
    time.sleep(1)
    if os.listdir(downloads):
        fail("the cross-site form made Chromium save %s" % os.listdir(downloads))
    return out


def replaced(element):
    """True once ``element``'s page is gone (the browser shows another document)."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def log_in_with_password(driver, portal, user, password):
    driver.get(portal + "/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    # The login page has an h1 too: wait until the answer has replaced it (a busy machine may take seconds
    # for the POST; reading the old page then gave its title instead of the answer).
    form = driver.find_element(By.ID, "login")
    form.click()
    wait_for("the page after the login", lambda: replaced(form) and driver.find_elements(By.TAG_NAME, "h1"))


def terminal_text(driver):
    return driver.execute_script("var rows = document.querySelector('.xterm-rows'); return rows ? rows.innerText : '';")


def serial_console(driver, portal, vm):
    """The VM's "Serial in the browser" page: the guest's line in the terminal, then a typed word echoed; what the
    page showed (its state line, the guest's last line, the echo, the browser's errors on this page)."""
    driver.get_log("browser")               # read (and so cleared): what earlier pages logged is not this page's
    driver.find_element(By.ID, "browser-serial-%s" % vm).click()
    line = wait_for("the guest's line in the browser's terminal",
                    lambda: re.search(r"vmconsole serial console ok \d+", terminal_text(driver)), CUT_WAIT)
    state = driver.find_element(By.ID, "console-state").text
    driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea").send_keys("typed-in-chromium")
    wait_for("the guest's echo of what was typed", lambda: "typed-in-chromium" in terminal_text(driver), CUT_WAIT)
    errors = [entry["message"][:200] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return dict(state=state, line=line.group(0), echoed=True, errors=errors, url=driver.current_url.replace(portal, ""))


CANVAS_COLOURS = """
var best = null;
document.querySelectorAll('canvas').forEach(function (c) { if (!best || c.width * c.height > best.width * best.height) best = c; });
if (!best || !best.width || !best.height) return [0, 0, 0];
var data = best.getContext('2d').getImageData(0, 0, best.width, best.height).data, seen = {}, n = 0;
for (var i = 0; i < data.length; i += 4 * 7) { var k = data[i] + ',' + data[i + 1] + ',' + data[i + 2]; if (!seen[k]) { seen[k] = 1; n++; } }
return [best.width, best.height, n];
"""


def screen_console(driver, console, vm):
    """The VM's "SPICE/VNC in the browser" page: connected, and its canvas shows the VM's screen (more than one
    colour: SeaBIOS's text on its background); what the page showed."""
    driver.get_log("browser")               # read (and so cleared): what earlier pages logged is not this page's
    driver.find_element(By.ID, "browser-%s-%s" % (console, vm)).click()
    wait_for("the %s page to connect" % console, lambda: driver.find_element(By.ID, "console-state").text == "connected",
             CUT_WAIT)
    width, height, colours = wait_for("the VM's screen on the %s page's canvas" % console,
                                      lambda: [v for v in [driver.execute_script(CANVAS_COLOURS)] if v[2] >= 2], CUT_WAIT)[0]
    errors = [entry["message"][:200] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return dict(state=driver.find_element(By.ID, "console-state").text, width=width, height=height, colours=colours,
                errors=errors)


def after_login(driver, downloads, job, result):
    if driver.title != "Your consoles":
        fail("the login did not lead to the VM list: %r: %s" % (driver.title, text_of(driver)[:300]))
    result["cookie"], csrf = session_state(driver)
    result["vms"] = vm_rows(driver)
    result["user_line"] = driver.find_element(By.CSS_SELECTOR, "p.note").text
    if job.get("forgery"):
        result["forgery"] = forgery(driver, job["portal"], result["cookie"], csrf, downloads)
        driver.get(job["portal"] + "/")
    result["downloads"] = {vm: download(driver, downloads, vm) for vm in job.get("download", [])}
    if job.get("serial"):
        result["serial"] = serial_console(driver, job["portal"], job["serial"])
        driver.get(job["portal"] + "/")
    for console in ("spice", "vnc"):
        if job.get(console):
            result[console] = screen_console(driver, console, job[console])
            driver.get(job["portal"] + "/")
    if job.get("disconnect"):
        vm = job["disconnect"]
        try:
            driver.find_element(By.ID, "disconnect-%s" % vm).click()
        except TimeoutException:          # the answer comes after every node's cut: waited for below
            pass
        start = time.monotonic()
        wait_for("the answer to disconnect", lambda: "every session of" in text_of(driver) or "not cut" in text_of(driver)
                 or driver.title == "Refused", CUT_WAIT)
        result["disconnect_seconds"] = round(time.monotonic() - start, 1)
        # The first note is the user line (name, log-out button); the message follows it.
        notes = [note.text for note in driver.find_elements(By.CSS_SELECTOR, "p.note")]
        result["disconnect"] = " | ".join(notes[1:]) if driver.title == "Your consoles" else text_of(driver)


SCREEN_BOX = {"spice": "spice-screen", "vnc": "console"}


def follow(driver, job, result):
    """The "follow" action: the login, each console's page open in a window, "ready" in job["ready"] (else why not),
    then each page connected again after the migration."""
    windows = {}
    try:
        log_in_with_password(driver, job["portal"], job["user"], job["password"])
        result["cookie"], _csrf = session_state(driver)
        for console in ("spice", "vnc"):
            if job.get(console):
                if windows:
                    driver.switch_to.new_window("window")
                    driver.get(job["portal"] + "/")
                windows[console] = (driver.current_window_handle, screen_console(driver, console, job[console]))
    except (SystemExit, WebDriverException):
        with open(job["ready"], "w", encoding="utf-8") as handle:
            handle.write("the consoles did not open (see the script's stderr)\n")
        raise
    with open(job["ready"], "w", encoding="utf-8") as handle:
        handle.write("ready\n")
    started = time.monotonic()
    for console, (window, before) in windows.items():
        driver.switch_to.window(window)
        box = driver.find_element(By.ID, SCREEN_BOX[console])

        def again():
            if box.get_attribute("data-reconnects") != "1":
                return None
            if driver.find_element(By.ID, "console-state").text != "connected":
                return None
            colours = driver.execute_script(CANVAS_COLOURS)[2]
            return colours >= 2 and colours
        left = job["within"] - (time.monotonic() - started)
        colours = wait_for("the %s page to connect again by itself after the migration (state: %s)" % (
            console, box.get_attribute("data-state")), again, max(left, 1))
        errors = [entry["message"][:200] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        result[console] = dict(before=before, state=driver.find_element(By.ID, "console-state").text, colours=colours,
                               reconnects=int(box.get_attribute("data-reconnects")),
                               gap_ms=int(box.get_attribute("data-reconnect-gap")), errors=errors)


def main():
    job = json.load(sys.stdin)
    os.environ["SE_OFFLINE"] = "true"       # Selenium Manager must not look for drivers: Debian's are given
    driver, downloads = browser(job["home"])
    result = {}
    try:
        if job["action"] == "password":
            log_in_with_password(driver, job["portal"], job["user"], job["password"])
            after_login(driver, downloads, job, result)
        elif job["action"] == "certificate":
            driver.get(job["portal"] + "/login")
            button = wait_for("the certificate login button", lambda: driver.find_elements(By.ID, "login-certificate"))
            result["certificate_button"] = button[0].text
            button[0].click()
            wait_for("the page after the login", lambda: driver.title != "Console portal")
            after_login(driver, downloads, job, result)
        elif job["action"] == "follow":
            follow(driver, job, result)
        elif job["action"] == "lockout":
            answers = []
            for attempt in range(job["failures"] + 1):
                password = job["password"] if attempt == job["failures"] else "wrong-%d" % attempt
                log_in_with_password(driver, job["portal"], job["user"], password)
                answers.append(driver.find_element(By.CSS_SELECTOR, "p.error").text
                               if driver.find_elements(By.CSS_SELECTOR, "p.error") else driver.title)
            result["answers"] = answers
            result["cookies"] = [c["name"] for c in driver.get_cookies()]
        else:
            fail("unknown action %r" % job["action"])
    finally:
        driver.quit()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
