// The pure SCSI layer in one import: constants, sense, CDBs, TransportIDs and PR data.
export * from './constants';
export * from './actions';
export * from './sense';
export * from './cdb';
export * from './transport-id';
export * from './parameter-list';
export * from './pr-in-data';
export * from './vpd';
