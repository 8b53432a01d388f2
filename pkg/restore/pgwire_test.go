package restore_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// pgConn is a minimal PostgreSQL client: protocol 3.0 over TCP, trust
// authentication only, simple queries only (the "Frontend/Backend
// Protocol" chapter of the PostgreSQL documentation, "Message Flow" and
// "Message Formats").
type pgConn struct {
	c net.Conn
	r *bufio.Reader
}

// pgDial connects to addr as user to database db and waits for the first
// ReadyForQuery.
func pgDial(addr, user, db string) (*pgConn, error) {
	return pgDialConn(func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }, user, db)
}

// pgDialConn is pgDial over the connection dial makes.
func pgDialConn(dial func() (net.Conn, error), user, db string) (*pgConn, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	p := &pgConn{c: c, r: bufio.NewReader(c)}
	params := "user\x00" + user + "\x00database\x00" + db + "\x00\x00"
	msg := binary.BigEndian.AppendUint32(nil, uint32(8+len(params)))
	msg = binary.BigEndian.AppendUint32(msg, 3<<16) // protocol 3.0
	msg = append(msg, params...)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		c.Close()
		return nil, fmt.Errorf("startup: %w", err)
	}
	if _, err := p.readUntilReady(); err != nil {
		c.Close()
		return nil, fmt.Errorf("startup: %w", err)
	}
	return p, nil
}

func (p *pgConn) Close() error {
	p.c.Write([]byte{'X', 0, 0, 0, 4}) // Terminate
	return p.c.Close()
}

// Query runs sql (one or more statements) and returns the rows of every
// result, each column as text ("NULL" for a null), or the server's error.
func (p *pgConn) Query(sql string) ([][]string, error) {
	msg := []byte{'Q'}
	msg = binary.BigEndian.AppendUint32(msg, uint32(4+len(sql)+1))
	msg = append(msg, sql...)
	msg = append(msg, 0)
	p.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.c.Write(msg); err != nil {
		return nil, err
	}
	return p.readUntilReady()
}

// readUntilReady reads messages up to ReadyForQuery, collecting DataRows
// and the first ErrorResponse.
func (p *pgConn) readUntilReady() ([][]string, error) {
	var rows [][]string
	var qerr error
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
			return rows, err
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n < 4 || n > 1<<24 {
			return rows, fmt.Errorf("message %q of length %d", hdr[0], n)
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(p.r, body); err != nil {
			return rows, err
		}
		switch hdr[0] {
		case 'R': // Authentication*: only AuthenticationOk (trust)
			if len(body) < 4 || binary.BigEndian.Uint32(body) != 0 {
				return rows, fmt.Errorf("authentication method %v is not supported", body)
			}
		case 'D': // DataRow
			if len(body) < 2 {
				return rows, fmt.Errorf("short DataRow")
			}
			cols := int(binary.BigEndian.Uint16(body))
			b := body[2:]
			row := make([]string, 0, cols)
			for i := 0; i < cols; i++ {
				if len(b) < 4 {
					return rows, fmt.Errorf("short DataRow")
				}
				l := int32(binary.BigEndian.Uint32(b))
				b = b[4:]
				if l < 0 {
					row = append(row, "NULL")
					continue
				}
				if int(l) > len(b) {
					return rows, fmt.Errorf("short DataRow")
				}
				row = append(row, string(b[:l]))
				b = b[l:]
			}
			rows = append(rows, row)
		case 'E': // ErrorResponse: fields of a type byte and a string
			if qerr == nil {
				var parts []string
				for _, f := range strings.Split(string(body), "\x00") {
					if len(f) > 1 && (f[0] == 'S' || f[0] == 'C' || f[0] == 'M') {
						parts = append(parts, f[1:])
					}
				}
				qerr = fmt.Errorf("postgres: %s", strings.Join(parts, " "))
			}
		case 'Z': // ReadyForQuery
			return rows, qerr
		}
		// Other messages (ParameterStatus, BackendKeyData, RowDescription,
		// CommandComplete, NoticeResponse, EmptyQueryResponse) carry
		// nothing the tests need.
	}
}
