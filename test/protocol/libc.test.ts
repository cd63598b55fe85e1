// The libc wrappers the protocol is built on, exercised on real kernel objects.

import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as libc from '../../ffi/libc';
import { openFdCount } from '../support/proc';

describe('ffi/libc', () => {
  let before: number;
  beforeEach(() => {
    before = openFdCount();
  });
  afterEach(() => {
    expect(openFdCount(), 'fds leaked by the test').to.equal(before);
  });

  it('passes fds with SCM_RIGHTS, marks them close-on-exec, and reports every one', () => {
    const [a, b] = libc.socketpair();
    const [r, w] = libc.pipe();
    try {
      expect(libc.sendmsg(a, Buffer.from('hello'), [r, w])).to.equal(5);
      const message = libc.recvmsg(b);
      expect(message).to.not.equal(null);
      expect(message!.bytes.toString()).to.equal('hello');
      expect(message!.fds).to.have.length(2);
      expect(message!.controlTruncated).to.equal(false);
      const [r2, w2] = message!.fds;
      expect(fs.readFileSync(`/proc/self/fdinfo/${r2}`, 'utf8')).to.match(/flags:\s*02/); // O_CLOEXEC
      expect(libc.getAccessMode(r2)).to.equal('read-only');
      expect(libc.getAccessMode(w2)).to.equal('write-only');
      expect(libc.write(w2, Buffer.from('xyz'))).to.equal(3);
      expect(libc.read(r)!.toString()).to.equal('xyz');
      expect(libc.read(r)).to.equal(null); // EAGAIN is a value
      for (const fd of message!.fds) libc.close(fd);
    } finally {
      for (const fd of [a, b, r, w]) libc.close(fd);
    }
  });

  it('reports MSG_CTRUNC when more fds arrive than the control buffer holds', () => {
    const [a, b] = libc.socketpair();
    const pipes = Array.from({ length: 5 }, () => libc.pipe());
    try {
      const sent = pipes.flat(); // 10 fds, more than RECV_MAX_FDS
      expect(sent.length).to.be.greaterThan(libc.RECV_MAX_FDS);
      const beforeReceive = openFdCount();
      expect(libc.sendmsg(a, Buffer.from('x'), sent)).to.equal(1);
      const message = libc.recvmsg(b)!;
      expect(message.controlTruncated).to.equal(true);
      expect(message.fds).to.have.length(libc.RECV_MAX_FDS);
      // The kernel installed only the fds it reported; the rest were dropped, not leaked.
      expect(openFdCount()).to.equal(beforeReceive + libc.RECV_MAX_FDS);
      for (const fd of message.fds) libc.close(fd);
      expect(libc.recvmsg(b)).to.equal(null);
    } finally {
      for (const fd of [a, b, ...pipes.flat()]) libc.close(fd);
    }
  });

  it('reads end of stream as empty bytes and no fds', () => {
    const [a, b] = libc.socketpair();
    libc.close(a);
    const message = libc.recvmsg(b);
    expect(message).to.deep.equal({ bytes: Buffer.alloc(0), fds: [], controlTruncated: false });
    libc.close(b);
  });

  it('sendmsg to a closed peer is EPIPE, not SIGPIPE', () => {
    const [a, b] = libc.socketpair();
    libc.close(b);
    expect(() => libc.sendmsg(a, Buffer.from('x'))).to.throw(libc.SystemCallError).with.property('code', 'EPIPE');
    libc.close(a);
  });

  it('throws SystemCallError with syscall, errno and code', () => {
    try {
      libc.close(1 << 20);
      expect.fail('close of a bad fd must throw');
    } catch (error) {
      expect(error).to.be.instanceOf(libc.SystemCallError);
      expect(error).to.include({ syscall: 'close', errno: os.constants.errno.EBADF, code: 'EBADF' });
    }
  });

  it('binds, listens, accepts and reports SO_PEERCRED', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpr-libc-'));
    const socketPath = path.join(dir, 's');
    const listener = libc.unixStreamSocket();
    const client = libc.unixStreamSocket();
    let accepted = -1;
    try {
      libc.bind(listener, socketPath);
      libc.listen(listener);
      expect(libc.accept4(listener)).to.equal(null);
      expect(libc.connect(client, socketPath)).to.equal('connected');
      accepted = libc.accept4(listener)!;
      expect(accepted).to.be.greaterThan(2);
      expect(libc.getPeerCredentials(accepted)).to.deep.equal({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
      expect(libc.getSocketError(client)).to.equal(0);
    } finally {
      for (const fd of [listener, client, accepted]) if (fd >= 0) libc.close(fd);
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('rejects socket paths that do not fit sun_path', () => {
    const fd = libc.unixStreamSocket();
    try {
      expect(() => libc.bind(fd, `/tmp/${'x'.repeat(200)}`)).to.throw(libc.SystemCallError).with.property('code', 'ENAMETOOLONG');
      expect(() => libc.connect(fd, '/nonexistent/dir/sock')).to.throw(libc.SystemCallError).with.property('code', 'ENOENT');
    } finally {
      libc.close(fd);
    }
  });

  it('fstat tells block, char and regular files apart and gives rdev', () => {
    const fd = fs.openSync('/dev/null', 'r');
    const file = fs.openSync(__filename, 'r');
    try {
      const devNull = libc.fstat(fd);
      expect(devNull).to.include({ isChar: true, isBlock: false, isRegular: false });
      expect(devNull.rdev).to.deep.equal({ major: 1, minor: 3 });
      const regular = libc.fstat(file);
      expect(regular).to.include({ isRegular: true, isChar: false });
      expect(regular.ino).to.equal(BigInt(fs.fstatSync(file).ino));
    } finally {
      fs.closeSync(fd);
      fs.closeSync(file);
    }
  });

  it('stat follows a path (and its symlinks) to what fstat says of an fd for it, and throws ENOENT for none', () => {
    const fd = fs.openSync('/dev/null', 'r');
    try {
      const byPath = libc.stat('/dev/null');
      expect(byPath).to.include({ isChar: true, isBlock: false, isRegular: false });
      expect(byPath.rdev).to.deep.equal(libc.fstat(fd).rdev);
      expect(libc.stat('/proc/self/fd/' + fd).rdev).to.deep.equal({ major: 1, minor: 3 });
      expect(libc.stat(__filename).ino).to.equal(BigInt(fs.statSync(__filename).ino));
      expect(() => libc.stat('/nonexistent/file')).to.throw(libc.SystemCallError).with.property('code', 'ENOENT');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('watchFd reports readiness and can be closed before the fd', async () => {
    const [a, b] = libc.socketpair();
    try {
      const events = await new Promise<libc.ReadinessEvents>((resolve, reject) => {
        const watcher = libc.watchFd(b, { readable: true }, (error, ev) => {
          watcher.close();
          if (error) reject(error);
          else resolve(ev);
        });
        libc.sendmsg(a, Buffer.from('ping'));
      });
      expect(events.readable).to.equal(true);
      expect(libc.recvmsg(b)!.bytes.toString()).to.equal('ping');
    } finally {
      libc.close(a);
      libc.close(b);
    }
  });
});
