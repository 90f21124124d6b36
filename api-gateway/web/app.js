// Easy-Note in the browser: one more client of the public JSON API
// (docs/api.md). The session is an HttpOnly cookie that login sets and
// logout clears, so no script on this page can read the token. Everything a
// user wrote is put on the page as text (`textContent`, `value`), never as
// HTML.

const $ = (selector) => document.querySelector(selector);

const traceUi = $('meta[name="easynote-trace-ui"]').content;
const pageSize = pageSizeFromUrl();
const view = { offset: 0, total: 0, search: '' };

/** `?page_size=N` (1 to 100) for a shorter or longer page; 10 otherwise. */
function pageSizeFromUrl() {
  const asked = Number.parseInt(new URLSearchParams(location.search).get('page_size'), 10);
  return Number.isInteger(asked) && asked >= 1 && asked <= 100 ? asked : 10;
}

/** A request the API refused, with what to tell the user. */
class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** What to say for a refused request (the envelope's `code`, docs/api.md). */
function explain(response, envelope) {
  const code = envelope && typeof envelope.code === 'number' ? envelope.code : 0;
  const said = envelope && typeof envelope.message === 'string' ? envelope.message : '';
  switch (code) {
    case 10003:
      return 'That username is taken: pick another one.';
    case 10005:
      return 'That note no longer exists.';
    case 10006: {
      const wait = Number.parseInt(response.headers.get('retry-after'), 10);
      return Number.isInteger(wait)
        ? `Too many requests: try again in ${wait} s.`
        : 'Too many requests: try again in a moment.';
    }
    case 10001:
      return response.status === 503
        ? 'The service is unavailable right now: try again in a moment.'
        : `Something went wrong on our side (${said || response.status}).`;
    default:
      return said || `The request failed (HTTP ${response.status}).`;
  }
}

/** One call of the JSON API; answers the envelope's `data`. */
async function api(method, path, body, headers = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError('The server cannot be reached: check the connection and try again.', 0, 0);
  }
  showTrace(response.headers.get('x-trace-id'));
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    envelope = null;
  }
  if (response.ok && envelope && envelope.code === 0) {
    return envelope.data;
  }
  throw new ApiError(explain(response, envelope), response.status, envelope ? envelope.code : 0);
}

/** The trace of the last request, linked to the trace UI when there is one. */
function showTrace(traceId) {
  const line = $('#trace');
  line.replaceChildren();
  if (!traceId) {
    return;
  }
  line.append('Last request: trace ');
  const id = document.createElement(traceUi ? 'a' : 'code');
  id.textContent = traceId;
  id.id = 'trace-id';
  if (traceUi) {
    id.href = traceUi.replaceAll('{trace_id}', encodeURIComponent(traceId));
    id.target = '_blank';
    id.rel = 'noopener noreferrer';
  }
  line.append(id);
}

function say(message) {
  $('#error').hidden = true;
  $('#error').textContent = '';
  $('#status').textContent = message;
}

function fail(error) {
  $('#status').textContent = '';
  $('#error').textContent = error instanceof ApiError ? error.message : `Unexpected error: ${error}`;
  $('#error').hidden = false;
}

/** Shows the log-in form, or the notes of the user logged in. */
function signedIn(name) {
  const yes = name !== null;
  $('#welcome').hidden = yes;
  $('#notes').hidden = !yes;
  $('#account').hidden = !yes;
  $('#who').textContent = yes ? name : '';
}

/** A refused session (expired, logged out elsewhere): back to the log-in form. */
function sessionEnded(error) {
  if (error instanceof ApiError && error.code === 10004 && $('#welcome').hidden) {
    localStorage.removeItem('easynote.username');
    signedIn(null);
    fail(new ApiError('Your session has ended: log in again.', 401, 10004));
    return true;
  }
  return false;
}

/** Loads and shows the current page of notes. */
async function loadNotes() {
  const query = new URLSearchParams({ offset: String(view.offset), limit: String(pageSize) });
  if (view.search) {
    query.set('search_key', view.search);
  }
  const page = await api('GET', `/v1/note/query?${query}`);
  view.total = page.total;
  render(page.notes);
}

function render(notes) {
  const list = $('#list');
  list.replaceChildren(...notes.map(noteItem));
  const pages = Math.max(1, Math.ceil(view.total / pageSize));
  const current = Math.floor(view.offset / pageSize) + 1;
  const found = view.search ? ` matching “${view.search}”` : '';
  $('#summary').textContent =
    view.total === 0 ? `No notes${found} yet.` : `${view.total} note${view.total === 1 ? '' : 's'}${found}, newest first.`;
  $('#page').textContent = `Page ${current} of ${pages}`;
  $('#newer').disabled = view.offset === 0;
  $('#older').disabled = view.offset + pageSize >= view.total;
  // How long the first list took to show, for the measurements in docs/.
  if (performance.getEntriesByName('easynote:notes-rendered').length === 0) {
    performance.mark('easynote:notes-rendered');
  }
}

function noteItem(note) {
  const item = $('#note-template').content.firstElementChild.cloneNode(true);
  item.dataset.noteId = String(note.note_id);
  item.querySelector('.title').textContent = note.title;
  item.querySelector('.content').textContent = note.content;
  const created = new Date(note.create_time * 1000);
  const time = item.querySelector('time');
  time.dateTime = created.toISOString();
  time.textContent = created.toLocaleString();
  const edit = item.querySelector('.edit');
  edit.setAttribute('aria-label', `Edit “${note.title}”`);
  edit.addEventListener('click', () => startEditing(item, note));
  const remove = item.querySelector('.delete');
  remove.setAttribute('aria-label', `Delete “${note.title}”`);
  remove.addEventListener('click', () => deleteNote(remove, note));
  return item;
}

function startEditing(item, note) {
  const form = $('#edit-template').content.firstElementChild.cloneNode(true);
  form.elements.title.value = note.title;
  form.elements.content.value = note.content;
  form.setAttribute('aria-label', `Edit “${note.title}”`);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const title = form.elements.title.value;
    const content = form.elements.content.value;
    run(async () => {
      await api('PUT', `/v1/note/${note.note_id}`, { title, content });
      await loadNotes();
      say('Note saved.');
    });
  });
  form.querySelector('.cancel').addEventListener('click', () => {
    item.replaceWith(noteItem(note));
  });
  item.querySelector('article').replaceWith(form);
  form.elements.title.focus();
}

/** Two presses delete: the first asks. */
function deleteNote(button, note) {
  if (button.dataset.confirm !== 'yes') {
    button.dataset.confirm = 'yes';
    button.textContent = 'Delete for good?';
    say(`Press “Delete for good?” to delete “${note.title}”.`);
    button.focus();
    return;
  }
  run(async () => {
    await api('DELETE', `/v1/note/${note.note_id}`);
    if (view.offset > 0 && view.offset >= view.total - 1) {
      view.offset = Math.max(0, view.offset - pageSize);
    }
    await loadNotes();
    say('Note deleted.');
  });
}

/** Runs an action, showing what went wrong; a busy form cannot be sent twice. */
async function run(action, form) {
  const buttons = form ? [...form.querySelectorAll('button')] : [];
  buttons.forEach((button) => { button.disabled = true; });
  try {
    await action();
  } catch (error) {
    if (!sessionEnded(error)) {
      fail(error);
    }
  } finally {
    buttons.forEach((button) => { button.disabled = false; });
  }
}

/** A random `Idempotency-Key`, so a create sent twice makes one note. */
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function start() {
  $('#auth').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.target;
    const action = event.submitter && event.submitter.value === 'register' ? 'register' : 'login';
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    if (!username || password.length < 6) {
      fail(new ApiError('Enter a username and a password of at least 6 characters.', 400, 10002));
      return;
    }
    run(async () => {
      if (action === 'register') {
        await api('POST', '/v1/user/register', { username, password });
      }
      await api('POST', '/v1/user/login', { username, password });
      localStorage.setItem('easynote.username', username);
      form.reset();
      view.offset = 0;
      view.search = '';
      $('#search-key').value = '';
      signedIn(username);
      await loadNotes();
      say(action === 'register' ? `Welcome, ${username}: your account is ready.` : `Welcome back, ${username}.`);
      $('#new-title').focus();
    }, form);
  });

  $('#logout').addEventListener('click', () => {
    run(async () => {
      try {
        await api('POST', '/v1/user/logout');
      } finally {
        localStorage.removeItem('easynote.username');
        signedIn(null);
      }
      say('Logged out.');
      $('#username').focus();
    });
  });

  $('#new-note').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.target;
    const title = form.elements.title.value;
    const content = form.elements.content.value;
    run(async () => {
      await api('POST', '/v1/note', { title, content }, { 'Idempotency-Key': idempotencyKey() });
      form.reset();
      view.offset = 0;
      await loadNotes();
      say(`Note “${title}” added.`);
      form.elements.title.focus();
    }, form);
  });

  $('#search').addEventListener('submit', (event) => {
    event.preventDefault();
    view.search = $('#search-key').value.trim();
    view.offset = 0;
    run(async () => {
      await loadNotes();
      say(view.search ? `Showing notes matching “${view.search}”.` : 'Showing all notes.');
    });
  });

  $('#newer').addEventListener('click', () => {
    view.offset = Math.max(0, view.offset - pageSize);
    run(loadNotes);
  });
  $('#older').addEventListener('click', () => {
    view.offset += pageSize;
    run(loadNotes);
  });

  // The first load: one call says whether the session cookie is good and
  // brings the first page.
  run(async () => {
    try {
      await loadNotes();
      signedIn(localStorage.getItem('easynote.username') || 'you');
    } catch (error) {
      if (error instanceof ApiError && error.code === 10004) {
        signedIn(null);
        $('#username').focus();
        return;
      }
      throw error;
    }
  });
}

start();
