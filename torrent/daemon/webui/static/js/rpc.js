// The Transmission RPC client: JSON over POST to /transmission/rpc with the
// X-Transmission-Session-Id handshake (a 409 carries the current id; retry once with it).
// The page is served with the id in a <meta> tag, so a fresh page does not start with a
// 409 (which the browser would log as a failed request); the handshake still covers a
// daemon restarted under an open page.

const URL_PATH = "/transmission/rpc";
const HEADER = "X-Transmission-Session-Id";

/** The daemon answered, but refused: `message` is its `result` string. */
export class RpcError extends Error {
  constructor(method, message) {
    super(message);
    this.name = "RpcError";
    this.method = method;
  }
}

/** No usable answer at all: the daemon is down, unreachable, or refused the request. */
export class ConnectionError extends Error {
  constructor(message) {
    super(message);
    this.name = "ConnectionError";
  }
}

export class Rpc {
  constructor(sessionId = "") {
    this.sessionId = sessionId;
    this.timeoutMs = 15000;
    // torrent-add may fetch a .torrent from a URL first (the daemon gives that 30 s).
    this.slowTimeoutMs = 45000;
  }

  /** Call `method`; resolves to its `arguments`, rejects with RpcError or ConnectionError. */
  async call(method, args = {}) {
    const body = JSON.stringify({ method, arguments: args });
    for (let attempt = 0; attempt < 2; attempt++) {
      let response;
      const controller = new AbortController();
      const limit = method === "torrent-add" ? this.slowTimeoutMs : this.timeoutMs;
      const timer = setTimeout(() => controller.abort(), limit);
      try {
        // From the origin, not the page's address: a page opened as http://user:pass@host/
        // may not fetch a URL with credentials in it; the browser sends the ones it has.
        response = await fetch(new URL(URL_PATH, window.location.origin), {
          method: "POST",
          headers: { "Content-Type": "application/json", [HEADER]: this.sessionId },
          body,
          credentials: "same-origin",
          cache: "no-store",
          signal: controller.signal,
        });
      } catch (err) {
        const why = err.name === "AbortError" ? "no answer in time" : "connection failed";
        throw new ConnectionError(why);
      } finally {
        clearTimeout(timer);
      }
      if (response.status === 409) {
        this.sessionId = response.headers.get(HEADER) || "";
        continue;
      }
      if (response.status === 401) throw new ConnectionError("not authorised (reload the page to log in)");
      if (!response.ok) throw new ConnectionError(`HTTP ${response.status}`);
      let answer;
      try {
        answer = await response.json();
      } catch {
        throw new ConnectionError("the answer was not JSON");
      }
      if (answer.result !== "success") throw new RpcError(method, String(answer.result));
      return answer.arguments || {};
    }
    throw new ConnectionError("the session-id handshake did not settle");
  }
}

/** An ArrayBuffer as base64 (what torrent-add's `metainfo` takes). */
export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  }
  return btoa(text);
}
