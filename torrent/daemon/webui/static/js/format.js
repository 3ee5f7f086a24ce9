// Numbers as people read them. Sizes and rates use SI units, as Transmission's daemon
// reports them (its session "units" say 1 kB = 1000 bytes).

const SIZE_UNITS = ["B", "kB", "MB", "GB", "TB", "PB"];

export function size(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "–";
  let i = 0;
  let value = bytes;
  while (value >= 1000 && i < SIZE_UNITS.length - 1) {
    value /= 1000;
    i++;
  }
  return `${i === 0 ? value : value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${SIZE_UNITS[i]}`;
}

export function rate(bps) {
  if (!bps) return "–";
  return `${size(bps)}/s`;
}

/** Floor, so "100%" means done (99.6% is not). */
export function percent(fraction) {
  if (!Number.isFinite(fraction)) return "0%";
  return `${Math.floor(Math.max(0, Math.min(1, fraction)) * 100)}%`;
}

export function eta(seconds) {
  if (seconds === -1) return "";
  if (seconds < 0 || !Number.isFinite(seconds)) return "∞";
  return duration(seconds);
}

export function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function ratio(value) {
  if (value === -1 || !Number.isFinite(value)) return "–";
  if (value === -2) return "∞";
  return value.toFixed(2);
}

export function date(unixSeconds) {
  if (!unixSeconds) return "–";
  const d = new Date(unixSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// Transmission's status numbers (tr_torrent_activity).
export const STATUS = {
  STOPPED: 0,
  CHECK_WAIT: 1,
  CHECK: 2,
  DOWNLOAD_WAIT: 3,
  DOWNLOAD: 4,
  SEED_WAIT: 5,
  SEED: 6,
};

/** The filter a torrent belongs to: downloading, seeding, queued, stopped, checking, error. */
export function stateKey(t) {
  if (t.error === 3) return "error";
  switch (t.status) {
    case STATUS.CHECK:
    case STATUS.CHECK_WAIT:
      return "checking";
    case STATUS.DOWNLOAD:
      return "downloading";
    case STATUS.SEED:
      return "seeding";
    case STATUS.DOWNLOAD_WAIT:
    case STATUS.SEED_WAIT:
      return "queued";
    default:
      return "stopped";
  }
}

/** What the state column says. */
export function stateText(t) {
  const key = stateKey(t);
  switch (key) {
    case "error":
      return `Error: ${t.errorString || "unknown"}`;
    case "checking":
      return t.status === STATUS.CHECK ? `Checking ${percent(t.recheckProgress)}` : "Queued to check";
    case "downloading":
      return t.metadataPercentComplete < 1 ? "Fetching metadata" : "Downloading";
    case "seeding":
      return "Seeding";
    case "queued":
      return t.status === STATUS.SEED_WAIT ? "Queued to seed" : "Queued";
    default:
      return "Stopped";
  }
}

export function isRunning(t) {
  return t.status !== STATUS.STOPPED;
}
