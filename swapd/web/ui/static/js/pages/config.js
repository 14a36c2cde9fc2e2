// Config: the file swapd runs on (read-only), and a Reload button.
//
// GET /api/config gives the path, the text as last loaded, when, and the last reload's
// result; POST /api/config/reload reloads now (400 with the problems if the file is
// broken: nothing changes then). Reloads from elsewhere (SIGHUP, --watch-config) arrive
// as configReload events and refresh the page.
import {api, apiJSON, errorMessage} from '../api.js';
import {fmtDateTime, h, replace} from '../dom.js';
import {subscribe} from '../store.js';
import {card, pageHead, spinner, toast} from '../ui.js';

/** YAML text as numbered lines, with comments and keys picked out (no parsing). */
function yamlView(text) {
  const lines = text.replace(/\n$/, '').split('\n');
  return h(
    'pre',
    {class: 'code yaml', 'aria-label': 'Config file'},
    lines.map((line, i) => {
      const comment = line.match(/^(\s*)(#.*)$/);
      let body;
      if (comment) {
        body = [comment[1], h('span', {class: 'y-comment'}, comment[2])];
      } else {
        const key = line.match(/^(\s*(?:- )?)([^\s#:'"][^:#]*?|"[^"]*"|'[^']*')(:)(\s|$)(.*)$/);
        body = key ? [key[1], h('span', {class: 'y-key'}, key[2]), key[3], key[4], valueView(key[5])] : valueView(line);
      }
      return h('div', {class: 'code-line'}, h('span', {class: 'line-no', 'aria-hidden': 'true'}, i + 1), h('span', {class: 'line-text'}, body, '\n'));
    }),
  );
}

function valueView(value) {
  const at = value.search(/\s#/);
  if (at < 0) return value;
  return [value.slice(0, at), h('span', {class: 'y-comment'}, value.slice(at))];
}

function names(label, list, cls) {
  if (!list || !list.length) return null;
  return h('div', {class: 'reload-list'}, h('span', {class: 'muted'}, `${label}: `), list.map((n) => h('span', {class: ['tag', cls]}, n)));
}

function reloadView(result) {
  if (!result) return h('p', {class: 'muted'}, 'Not reloaded since swapd started.');
  const changes = [names('added', result.added, 'tag-ok'), names('removed', result.removed, 'tag-bad'), names('changed', result.changed, 'tag-warn'), names('updated', result.updated, 'tag-warn'), names('unchanged', result.unchanged, '')];
  return h(
    'div',
    {class: ['reload-result', result.ok ? 'ok' : 'failed']},
    h('p', null, h('strong', null, result.ok ? 'Reloaded' : 'Reload failed'), h('span', {class: 'muted'}, ` · ${fmtDateTime(result.at)}${result.trigger ? ` · ${result.trigger}` : ''}`)),
    result.error ? h('pre', {class: 'error-pre'}, result.error) : null,
    changes,
  );
}

export function mount(root) {
  const info = h('div', {class: 'config-info'}, spinner('loading'), ' Loading…');
  const reloadBox = h('div');
  const text = h('div');
  let alive = true;
  const button = h('button', {type: 'button', class: 'btn btn-primary', onclick: reload}, 'Reload');

  async function load() {
    try {
      const config = await apiJSON('/api/config');
      if (!alive) return;
      replace(
        info,
        h('dl', {class: 'facts'}, h('dt', null, 'File'), h('dd', {class: 'mono'}, config.path || '(none: started without a file)'), h('dt', null, 'Loaded'), h('dd', null, fmtDateTime(config.loaded_at))),
      );
      button.disabled = !config.path;
      replace(reloadBox, reloadView(config.last_reload));
      replace(text, config.yaml ? yamlView(config.yaml) : h('p', {class: 'muted'}, 'No config text.'));
    } catch (error) {
      if (alive) replace(info, h('p', {class: 'error-text'}, `Could not read the config: ${error.message}`));
    }
  }

  async function reload() {
    button.disabled = true;
    replace(button, spinner('reloading'), ' Reloading…');
    try {
      const response = await api('/api/config/reload', {method: 'POST'});
      if (response.ok) {
        const result = await response.json();
        toast(`Config reloaded: ${[`${result.added?.length || 0} added`, `${result.removed?.length || 0} removed`, `${result.changed?.length || 0} changed`].join(', ')}`, 'ok');
      } else if (response.status === 400) {
        await response.body?.cancel();
        toast('Config not reloaded: the file has problems (see Last reload). Nothing changed.', 'error');
      } else {
        toast(await errorMessage(response), 'error');
      }
    } catch (error) {
      toast(`Reload failed: ${error.message}`, 'error');
    } finally {
      replace(button, 'Reload');
      button.disabled = false;
      await load();
    }
  }

  replace(
    root,
    pageHead('Config', 'The file swapd runs on, as last loaded. Edit it on disk, then reload.', button),
    card('Source', null, info, h('h4', null, 'Last reload'), reloadBox),
    card('YAML', null, text),
  );
  load();
  const off = subscribe((kind, detail) => {
    if (kind === 'configReload' && detail?.state === 'end') load();
  });
  return () => {
    alive = false;
    off();
  };
}
