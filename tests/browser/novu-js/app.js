// Renders one subscriber's inbox through @novu/js for tests/test_novu_js.py.
// The test sets window.NOVU_OPTIONS before this script runs and reads window.inbox.
(function () {
  const novu = new window.NovuJs.Novu(window.NOVU_OPTIONS);
  const events = [];

  function renderList(element, notifications) {
    element.replaceChildren();
    if (notifications.length === 0) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "no notifications";
      element.append(empty);
      return;
    }
    for (const notification of notifications) {
      const item = document.createElement("li");
      item.dataset.id = notification.id;
      item.className = notification.isRead ? "read" : "unread";
      const subject = document.createElement("div");
      subject.className = "subject";
      subject.textContent = notification.subject || "";
      const body = document.createElement("div");
      body.className = "body";
      body.textContent = notification.body;
      item.append(subject, body);
      element.append(item);
    }
  }

  function renderCount(count) {
    const badge = document.getElementById("unread");
    badge.textContent = String(count);
    badge.dataset.count = String(count);
  }

  // Each call returns {data, error} as @novu/js does, with errors flattened to their message
  // so that page.evaluate can return them.
  function toPlainResult(result) {
    return { data: result.data, error: result.error ? String(result.error.message || result.error) : null };
  }

  // The client's list cache does not add notifications that arrive over the socket, so the page
  // clears it before each refresh, as the Inbox UI of @novu/js does when it shows new notifications.
  async function refresh() {
    novu.notifications.clearCache();
    // The Inbox UI's default status, "unread & read", lists with archived and snoozed false.
    const active = await novu.notifications.list({ limit: 10, archived: false, snoozed: false });
    const archived = await novu.notifications.list({ limit: 10, archived: true });
    const count = await novu.notifications.count({ read: false, archived: false, snoozed: false });
    if (active.error || archived.error || count.error) {
      throw new Error(String((active.error || archived.error || count.error).message));
    }
    renderList(document.getElementById("list"), active.data.notifications);
    renderList(document.getElementById("archived"), archived.data.notifications);
    renderCount(count.data.count);
    return {
      active: active.data.notifications.map(summarize),
      archived: archived.data.notifications.map(summarize),
      hasMore: active.data.hasMore,
      count: count.data.count,
    };
  }

  function summarize(notification) {
    return {
      id: notification.id,
      subject: notification.subject,
      body: notification.body,
      isRead: notification.isRead,
      isSeen: notification.isSeen,
      isArchived: notification.isArchived,
      createdAt: notification.createdAt,
      subscriberId: notification.to && notification.to.subscriberId,
      workflowIdentifier: notification.workflow && notification.workflow.identifier,
    };
  }

  async function findNotification(id) {
    for (const archived of [false, true]) {
      const result = await novu.notifications.list({ limit: 50, archived });
      const found = result.data && result.data.notifications.find((notification) => notification.id === id);
      if (found) {
        return found;
      }
    }
    throw new Error(`notification ${id} is not in the list`);
  }

  novu.on("session.initialize.resolved", ({ data, error }) => {
    events.push({ name: "session", ok: !error, error: error ? String(error.message) : null, data: data || null });
    document.getElementById("status").textContent = error ? `session failed: ${error.message}` : "connected";
  });
  novu.on("notifications.notification_received", ({ result }) => {
    events.push({ name: "notification_received", notification: summarize(result) });
    refresh();
  });
  novu.on("notifications.unread_count_changed", ({ result }) => {
    events.push({ name: "unread_count_changed", counts: result });
    renderCount(result.total);
  });
  novu.on("notifications.unseen_count_changed", ({ result }) => {
    events.push({ name: "unseen_count_changed", count: result });
  });
  novu.on("socket.connect.resolved", ({ error }) => {
    events.push({ name: "socket_connected", ok: !error });
  });

  window.inbox = {
    novu,
    events,
    refresh,
    async read(id) {
      const result = toPlainResult(await (await findNotification(id)).read());
      result.data = result.data && summarize(result.data);
      return result;
    },
    async archive(id) {
      const result = toPlainResult(await (await findNotification(id)).archive());
      result.data = result.data && summarize(result.data);
      return result;
    },
  };
})();
