// Who may call the admin methods. Two gates: the bus policy (dbus/org.mpathpr.Manager1.conf
// lets only root call methods on the system bus) and, here, the caller's uid as the bus
// daemon vouches for it: root or an allow-listed uid (--dbus-admin-uid). Reading stays
// open to everyone the bus lets in.

import { DBusError, Message, type MessageBus } from 'dbus-next';
import type { Logger } from 'pino';
import type { BusCaller } from './method-calls';
import { DbusErrors } from './names';

export class AdminAuthorizer {
  private readonly adminUids: ReadonlySet<number>;

  constructor(
    private readonly bus: MessageBus,
    private readonly logger: Logger,
    /** Uids besides 0 that may call the admin methods. */
    adminUids: readonly number[] = [],
  ) {
    this.adminUids = new Set([0, ...adminUids]);
  }

  /** The caller's uid when it is root or allow-listed; otherwise rejects with AccessDenied. `what` names the call in logs and errors. */
  async authorize(caller: BusCaller | undefined, what: string): Promise<number> {
    const sender = caller?.sender;
    if (!sender) throw new DBusError(DbusErrors.ACCESS_DENIED, `${what}: the caller is unknown`);
    let uid: number;
    try {
      uid = await this.unixUserOf(sender);
    } catch (error) {
      throw new DBusError(DbusErrors.ACCESS_DENIED, `${what}: cannot tell who ${sender} is: ${(error as Error).message}`);
    }
    if (!this.adminUids.has(uid)) {
      this.logger.warn({ sender, uid, call: what }, `D-Bus admin call refused for uid ${uid}`);
      throw new DBusError(DbusErrors.ACCESS_DENIED, `${what}: uid ${uid} is not allowed (root${this.adminUids.size > 1 ? ' and the --dbus-admin-uid list' : ''} only)`);
    }
    this.logger.info({ sender, uid, call: what }, `D-Bus admin call by uid ${uid}`);
    return uid;
  }

  /** The bus daemon's answer to GetConnectionUnixUser: the uid it saw when the connection authenticated. */
  private async unixUserOf(sender: string): Promise<number> {
    const reply = await this.bus.call(
      new Message({
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'GetConnectionUnixUser',
        signature: 's',
        body: [sender],
      }),
    );
    return Number(reply?.body[0]);
  }
}
