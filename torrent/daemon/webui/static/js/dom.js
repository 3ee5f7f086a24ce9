// Building DOM nodes without markup: every string becomes a text node or a property, never
// HTML. Torrent names, comments, file names, client names and tracker messages come from
// other people; none of them may be parsed as HTML (see webui/__init__.py on the CSP).

/**
 * el("td", {className: "x", dataset: {field: "name"}}, "text", child)
 * Attributes are set as properties (or dataset entries); children are nodes or strings.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "attrs") for (const [a, v] of Object.entries(value)) node.setAttribute(a, v);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Set a node's text only when it changed (a live list rewrites most cells every poll). */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function $$(selector, root = document) {
  return Array.from(root.querySelectorAll(selector));
}
