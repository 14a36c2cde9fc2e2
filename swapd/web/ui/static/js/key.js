// What the presented API key may do (GET /api/key: its name, role and model patterns).
//
// The page marks <html data-role="inference|observer|admin" data-scope="all|some">, and
// app.css hides `.admin-only` controls (load/unload, cancel, captures, config) from
// non-admin keys and `.observer-only` pages from inference keys, so the UI offers nothing
// that would answer 403. Until the answer is in, admin controls stay hidden.
import {api, onKeyChange} from './api.js';

export const key = {name: null, role: '', models: '*'};

/** Ask swapd who the key is (asks the user for a key first if swapd wants one). */
export async function loadKey() {
  try {
    const response = await api('/api/key');
    if (response.ok) Object.assign(key, await response.json());
    else await response.body?.cancel();
  } catch {
    // offline: keep what was known; the next key change asks again
  }
  document.documentElement.dataset.role = key.role;
  document.documentElement.dataset.scope = key.models === '*' ? 'all' : 'some';
}

/** Whether the key sees every model's data (admin, or a key of every model). */
export function seesEverything() {
  return key.role === 'admin' || key.models === '*';
}

onKeyChange(() => loadKey());
